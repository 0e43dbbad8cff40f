"""Crop engine: CropSpec -> image, maps, instances and CABB targets, crop-then-resize."""
from isus.crop import functional
from isus.crop.engine import CropConfig, CropEngine, CropSample, InstanceVisibility, crop_sample
from isus.crop.functional import (choose_reduce, crop_boxes, crop_size, hflip_boxes, image_border_sides, map_boxes,
                                  sample_map, select_instances, semantic_lut, source_pixels, truncated_sides, warp_plan)
from isus.crop.sources import AnnotationSource, DecodedAnnotationSource, DecodedImageSource, ImageSource

__all__ = ["CropConfig", "CropEngine", "CropSample", "InstanceVisibility", "crop_sample", "functional", "ImageSource", "AnnotationSource",
           "DecodedImageSource", "DecodedAnnotationSource", "crop_size", "choose_reduce", "source_pixels", "warp_plan",
           "sample_map", "crop_boxes", "hflip_boxes", "map_boxes", "image_border_sides", "truncated_sides",
           "semantic_lut", "select_instances"]
