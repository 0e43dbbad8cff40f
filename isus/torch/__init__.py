"""PyTorch integration: the crop sampler as a ``torch.utils.data.Sampler`` drop-in."""
from isus.torch.sampler import CropSampler

__all__ = ["CropSampler"]
