"""Class-Uniform (CUS), Instance Scale-Uniform (ISUS) and repeat-factor (RFS) sampling of training crops."""
from isus.sampling.config import RepeatFactorConfig, SamplerConfig
from isus.sampling.levels import FPNLevels, LevelRule
from isus.sampling.policy import CropBatch, RepeatFactorPolicy, SamplingPolicy
from isus.sampling.repeat import RepeatFactors, class_repeat_factors, repeat_factors

__all__ = ["SamplerConfig", "RepeatFactorConfig", "FPNLevels", "LevelRule", "CropBatch", "SamplingPolicy",
           "RepeatFactorPolicy", "RepeatFactors", "class_repeat_factors", "repeat_factors"]
