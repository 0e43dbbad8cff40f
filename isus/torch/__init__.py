"""PyTorch integration: the crop sampler (a ``Sampler`` drop-in) and the crop dataset."""
from isus.torch.dataset import PanopticCropDataset, collate_crops, sample_to_tensors, to_detectron2, to_tv_tensors
from isus.torch.sampler import CropSampler, SamplerStateError

__all__ = ["CropSampler", "SamplerStateError", "PanopticCropDataset", "collate_crops", "sample_to_tensors", "to_tv_tensors", "to_detectron2"]
