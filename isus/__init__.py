"""isus: crop-based training of panoptic segmentation networks at all scales.

Implements "Improving Panoptic Segmentation at All Scales" (Porzi, Rota Bulò, Kontschieder,
CVPR 2021): dataset readers for MVD, Cityscapes, IDD and COCO panoptic, synthetic datasets in
each layout, and (in later modules) the index, ISUS/CUS samplers, crop engine and CABB loss.
"""
from types import ModuleType

from isus import synth
from isus.datasets import (PanopticDataset, dataset_names, max_image_pixels, open_dataset, register_dataset,
                           set_max_image_pixels)
from isus.crop import CropConfig, CropEngine, CropSample, InstanceVisibility, crop_sample
from isus.errors import DatasetError, InstancesUnavailableError, IsusError
from isus.index import (ClassTable, Index, IndexFileError, IndexMeta, IndexMismatchError, Instances, build_index,
                        merge_indexes)
from isus.sampling import (CropBatch, FPNLevels, LevelRule, RepeatFactorConfig, RepeatFactorPolicy, SamplerConfig,
                           SamplingPolicy)
from isus.summary import DatasetSummary, summarize
from isus.types import SEGMENT_DTYPE, Category, CropSpec, ImageInfo, Panoptic
from isus.version import __version__

__all__ = [
    "__version__",
    "Category",
    "ImageInfo",
    "Panoptic",
    "SEGMENT_DTYPE",
    "IsusError",
    "DatasetError",
    "InstancesUnavailableError",
    "PanopticDataset",
    "open_dataset",
    "register_dataset",
    "dataset_names",
    "max_image_pixels",
    "set_max_image_pixels",
    "DatasetSummary",
    "summarize",
    "synth",
    "Index",
    "Instances",
    "ClassTable",
    "IndexMeta",
    "IndexFileError",
    "IndexMismatchError",
    "build_index",
    "merge_indexes",
    "CropSpec",
    "CropBatch",
    "SamplerConfig",
    "RepeatFactorConfig",
    "FPNLevels",
    "LevelRule",
    "SamplingPolicy",
    "RepeatFactorPolicy",
    "CropConfig",
    "CropEngine",
    "CropSample",
    "InstanceVisibility",
    "crop_sample",
    "torch",
    "cabb",
    "eval",
]


def __getattr__(name: str) -> ModuleType:
    # isus.torch and isus.cabb import torch, which takes seconds; isus.eval pycocotools: only when asked for.
    if name in ("torch", "cabb", "eval"):
        import importlib

        return importlib.import_module(f"isus.{name}")
    raise AttributeError(f"module 'isus' has no attribute {name!r}")
