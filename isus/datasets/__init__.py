"""Dataset readers behind one record API (:func:`open_dataset`)."""
from isus.datasets._io import max_image_pixels, set_max_image_pixels
from isus.datasets.base import ImageFiles, PanopticDataset, dataset_names, open_dataset, register_dataset
from isus.datasets.cityscapes import IDD, Cityscapes
from isus.datasets.coco import CocoPanoptic
from isus.datasets.mapillary import MapillaryVistas

__all__ = [
    "PanopticDataset",
    "ImageFiles",
    "open_dataset",
    "register_dataset",
    "dataset_names",
    "MapillaryVistas",
    "Cityscapes",
    "IDD",
    "CocoPanoptic",
    "max_image_pixels",
    "set_max_image_pixels",
]
