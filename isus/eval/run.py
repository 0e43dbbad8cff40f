"""Evaluate a whole dataset against prediction files, in parallel processes."""
from __future__ import annotations

import os
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from isus._parallel import run_parallel
from isus.progress import Progress
from isus.datasets import PanopticDataset
from isus.eval.coco import DEFAULT_PERCENTILES, Detections
from isus.eval.compare import dataset_identity
from isus.eval.evaluator import EvalResult, PanopticEvaluator
from isus.eval.io import PanopticPredictions, PredictionFileError, _key
from isus.eval.categories import CategoryTable
from isus.eval.stats import ImageStats, image_stats
from isus.types import Category, Panoptic

__all__ = ["evaluate_dataset", "load_pair", "per_image_stats"]

ProgressFn = Callable[[int, int], None]


_State = tuple[PanopticDataset, PanopticPredictions, dict[str, Detections] | None, CategoryTable]


def _task(state: _State, i: int) -> ImageStats:
    return _one(*state, i)


_DECODER: dict[str, Any] = {}


def load_pair(ds: PanopticDataset, preds: PanopticPredictions, i: int) -> tuple[Panoptic, Panoptic]:
    """Ground truth and prediction of image ``i``, decoded concurrently: PNG decoding is most of
    an image's evaluation time, and both decoders (OpenCV, the id kernels) release the GIL."""
    if _DECODER.get("pid") != os.getpid():  # a forked worker does not inherit the parent's thread
        _DECODER.update(pid=os.getpid(), pool=ThreadPoolExecutor(1, thread_name_prefix="isus-eval-decode"))
    info = ds.image_info(i)
    pred = _DECODER["pool"].submit(preds.load, info.image_id)
    gt = ds.load_panoptic(i)
    return gt, pred.result()


def _one(ds: PanopticDataset, preds: PanopticPredictions, instances: dict[str, Detections] | None,
         table: CategoryTable, i: int) -> ImageStats:
    info = ds.image_info(i)
    gt, pred = load_pair(ds, preds, i)
    det = None
    if instances is not None:
        det = instances.get(_key(info.image_id), Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)))
    return image_stats(gt, pred, table, instances=det, image=f"{info.file_name} (image_id {info.image_id!r})",
                       ap=instances is not None)


def _warm_up(table: CategoryTable) -> None:
    """Compile the kernels in the parent, so forked workers inherit them."""
    from isus.types import Panoptic, make_segments

    p = Panoptic(np.ones((2, 2), np.int32), make_segments([1], [table.categories[0].id], [False]))
    image_stats(p, p, table, ap=True)


def evaluate_dataset(
    ds: PanopticDataset,
    predictions: PanopticPredictions | str,
    instances: dict[str, Detections] | str | None = None,
    *,
    categories: Sequence[Category] | None = None,
    workers: int = 1,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    edges: Sequence[float] | None = None,
    max_dets: int = 100,
    ranges: Mapping[str, tuple[float, float]] | None = None,
    only_predicted: bool = False,
    progress: bool | ProgressFn = False,
) -> EvalResult:
    """Evaluate panoptic predictions (and optionally scored instances) against every image of ``ds``.

    Parameters
    ----------
    ds
        The ground truth, opened with :func:`isus.open_dataset`.
    predictions
        :class:`PanopticPredictions` or the path of its JSON (or folder).
    instances
        ``{image_id: Detections}`` or the path of a COCO results JSON, for box/mask AP.
    categories
        Evaluated categories (default: the dataset's).
    workers
        Processes evaluating images in parallel (1 = in this process).
    percentiles, edges, max_dets, ranges
        See :class:`PanopticEvaluator`.
    only_predicted
        Evaluate only the ground-truth images that have a prediction (e.g. a run evaluated on part
        of a split) instead of requiring one for every image; the size buckets then come from
        those images.
    progress
        True for progress on stderr, or a callable ``progress(done, total)``.

    Raises
    ------
    isus.IsusError
        When a ground-truth image has no prediction or a prediction names no ground-truth image,
        and for every malformed input (naming the image).
    """
    from isus.eval.io import read_instances

    if not isinstance(predictions, PanopticPredictions):
        predictions = PanopticPredictions(predictions)
    if instances is not None and not isinstance(instances, dict):
        instances = read_instances(instances, categories=categories if categories is not None else ds.categories)
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"evaluate_dataset(workers=) expects a positive int; got {workers!r}")
    ev = PanopticEvaluator(categories if categories is not None else ds.categories, percentiles=percentiles,
                           edges=edges, max_dets=max_dets, ranges=ranges)
    all_keys = [_key(ds.image_info(i).image_id) for i in range(len(ds))]
    pred_keys = set(predictions.image_ids())
    todo = [i for i, k in enumerate(all_keys) if k in pred_keys] if only_predicted else list(range(len(ds)))
    if not todo:
        raise PredictionFileError("no prediction names an image of the ground truth", predictions.json_path)
    gt_keys = [all_keys[i] for i in todo]
    _check_coverage(gt_keys, pred_keys, predictions.json_path, "prediction")
    if instances is not None:
        extra = sorted(set(instances) - set(gt_keys))
        if extra:
            raise PredictionFileError(f"instances for image ids {extra[:5]} that the ground truth does not have "
                                      f"({len(extra)} in all)")
    done = _stats(ds, predictions, instances, ev.table, todo, workers, progress)
    for i in todo:  # image order, so that AP does not depend on scheduling
        ev.add_stats(done[i])
    res = ev.result()
    res.dataset = dataset_identity(ds.name, ds.split, gt_keys)
    return res


def per_image_stats(
    ds: PanopticDataset,
    predictions: PanopticPredictions | str,
    *,
    images: Sequence[int] | None = None,
    categories: Sequence[Category] | None = None,
    workers: int = 1,
    progress: bool | ProgressFn = False,
) -> dict[int, ImageStats]:
    """Each image's own :class:`ImageStats` (no AP records), e.g. to rank images by their PQ.

    ``images``: positions in ``ds`` (default: every image of ``ds`` that has a prediction). One
    image's metrics are ``PanopticEvaluator`` over that image alone::

        ev = PanopticEvaluator(ds.categories); ev.add_stats(stats[i]); ev.result().pq

    Raises :class:`PredictionFileError` when a requested image has no prediction, or none of
    ``ds``'s images has one.
    """
    if not isinstance(predictions, PanopticPredictions):
        predictions = PanopticPredictions(predictions)
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"per_image_stats(workers=) expects a positive int; got {workers!r}")
    keys = [_key(ds.image_info(i).image_id) for i in range(len(ds))]
    pred_keys = set(predictions.image_ids())
    if images is None:
        todo = [i for i, k in enumerate(keys) if k in pred_keys]
        if not todo:
            raise PredictionFileError("no prediction names an image of the ground truth", predictions.json_path)
    else:
        todo = list(dict.fromkeys(int(i) for i in images))
        bad = [i for i in todo if not 0 <= i < len(ds)]
        if bad:
            raise ValueError(f"per_image_stats(images=) expects positions in 0..{len(ds) - 1}; got {bad[0]}")
        missing = [keys[i] for i in todo if keys[i] not in pred_keys]
        if missing:
            raise PredictionFileError(f"no prediction for {len(missing)} of the {len(todo)} images asked for "
                                      f"(first: image_id {missing[0]!r})", predictions.json_path)
    table = CategoryTable(tuple(categories if categories is not None else ds.categories))
    done = _stats(ds, predictions, None, table, todo, workers, progress)
    return {i: done[i] for i in todo}


def _check_coverage(gt_keys: list[str], pred_keys: set[str], where: str | Path | None, what: str) -> None:
    missing = [k for k in gt_keys if k not in pred_keys]
    if missing:
        raise PredictionFileError(f"no {what} for {len(missing)} of {len(gt_keys)} ground-truth images "
                                  f"(first: image_id {missing[0]!r})", where)
    extra = sorted(pred_keys - set(gt_keys))
    if extra:
        raise PredictionFileError(f"{len(extra)} {what}s for image ids the ground truth does not have "
                                  f"(first: {extra[0]!r}); evaluate the matching split", where)


def _stats(ds: PanopticDataset, preds: PanopticPredictions, instances: dict[str, Detections] | None,
           table: CategoryTable, todo: list[int], workers: int,
           progress: bool | ProgressFn) -> dict[int, ImageStats]:
    """Each image of ``todo``'s statistics (in completion order), with a progress bar or callback."""
    bar = Progress(len(todo), "evaluating") if progress is True else None
    report = bar if bar is not None else (progress if callable(progress) else None)
    done: dict[int, ImageStats] = {}

    def on_done(i: int, st: ImageStats) -> None:
        done[i] = st
        if report is not None:
            report(len(done), len(todo))

    try:
        _run(ds, preds, instances, table, todo, workers, on_done)
    finally:
        if bar is not None:
            bar.close()
    return done


def _run(ds: PanopticDataset, preds: PanopticPredictions, instances: dict[str, Detections] | None,
         table: CategoryTable, todo: Sequence[int], workers: int,
         on_done: Callable[[int, ImageStats], None]) -> None:
    _warm_up(table)
    run_parallel(_task, (ds, preds, instances, table), todo, workers, on_done)
