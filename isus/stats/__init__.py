"""Numbers behind the paper's Fig. 2 and the per-level supervision balance."""
from isus.stats.compute import crop_level_counts, full_image_level_counts

__all__ = ["crop_level_counts", "full_image_level_counts"]
