"""Dataset readers behind one record API (:func:`open_dataset`), and the registry that knows each format."""
from isus.datasets.base import (ImageFiles, PanopticDataset, SamplerPreset, SplitLayout, canonical_name,
                                dataset_formats, dataset_names, find_splits, open_dataset, reader_class, reader_options,
                                register_dataset)
from isus.datasets.io import max_image_pixels, set_max_image_pixels

# Registration order is the order dataset_formats() and the CLI list the formats in.
from isus.datasets.mapillary import MapillaryVistas
from isus.datasets.cityscapes import IDD, Cityscapes
from isus.datasets.coco import CocoPanoptic

__all__ = [
    "PanopticDataset",
    "ImageFiles",
    "open_dataset",
    "register_dataset",
    "dataset_names",
    "dataset_formats",
    "reader_class",
    "canonical_name",
    "reader_options",
    "find_splits",
    "SplitLayout",
    "SamplerPreset",
    "MapillaryVistas",
    "Cityscapes",
    "IDD",
    "CocoPanoptic",
    "max_image_pixels",
    "set_max_image_pixels",
]
