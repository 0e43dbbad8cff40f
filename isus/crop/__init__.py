"""Crop engine: CropSpec -> image, maps, instances and CABB targets, crop-then-resize."""
from isus.crop.engine import CropConfig, CropEngine, CropSample, crop_sample

__all__ = ["CropConfig", "CropEngine", "CropSample", "crop_sample"]
