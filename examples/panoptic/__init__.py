"""Panoptic FPN training example: torchvision Mask R-CNN + semantic head + CABB loss."""
