"""Evaluation at all scales: PQ/SQ/RQ, PQ†, parsing covering, mIoU, and PQ/SQ/RQ/PC and box/mask AP by
size bucket.

``PanopticEvaluator`` takes one image at a time (ground truth, prediction and optionally the
detector's scored instances), keeps only per-category sums and compact instance records, and
returns an :class:`EvalResult`. PQ follows panopticapi, AP is pycocotools' ``COCOeval``; see
``docs/evaluation.md`` for every formula and its source.
"""
from isus.eval.categories import CategoryTable, EvalInputError
from isus.eval.coco import DEFAULT_PERCENTILES, Detections, bucket_edges
from isus.eval.compare import RunMismatchError, check_comparable
from isus.eval.evaluator import EvalResult, EvalResultError, PanopticEvaluator
from isus.eval.extent import box_extent, bucket_index, extent_summary
from isus.eval.io import (PanopticPredictions, PanopticPredictionWriter, PredictionFileError, read_instances,
                          write_instances)
from isus.eval.run import evaluate_dataset, per_image_stats
from isus.eval.stats import ImageStats, SizeSums, image_stats, size_bucket

__all__ = ["PanopticEvaluator", "EvalResult", "Detections", "ImageStats", "CategoryTable", "image_stats",
           "bucket_edges", "DEFAULT_PERCENTILES", "PanopticPredictions", "PanopticPredictionWriter",
           "PredictionFileError", "EvalInputError", "read_instances", "write_instances", "evaluate_dataset",
           "per_image_stats", "box_extent", "extent_summary", "bucket_index", "EvalResultError", "RunMismatchError",
           "check_comparable", "SizeSums", "size_bucket"]
