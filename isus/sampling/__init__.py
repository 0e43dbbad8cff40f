"""Class-Uniform (CUS) and Instance Scale-Uniform (ISUS) sampling of training crops."""
from isus.sampling.config import SamplerConfig
from isus.sampling.levels import FPNLevels, LevelRule
from isus.sampling.policy import CropBatch, SamplingPolicy

__all__ = ["SamplerConfig", "FPNLevels", "LevelRule", "CropBatch", "SamplingPolicy"]
