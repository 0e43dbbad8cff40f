"""PyTorch integration: the crop sampler (a ``Sampler`` drop-in), the crop dataset, and masks
rebuilt on the training device."""
from isus.torch.dataset import PanopticCropDataset, collate_crops, sample_to_tensors, to_detectron2, to_tv_tensors
from isus.torch.sampler import CropSampler, SamplerStateError
from isus.torch.targets import expand_masks, expand_semantic, expand_targets

__all__ = ["CropSampler", "SamplerStateError", "PanopticCropDataset", "collate_crops", "sample_to_tensors", "to_tv_tensors",
           "to_detectron2", "expand_masks", "expand_semantic", "expand_targets"]
