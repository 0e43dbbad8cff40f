"""isus: crop-based training of panoptic segmentation networks at all scales."""
__version__ = "0.1.0"
