"""Numbers and plots behind the paper's Fig. 2 and the per-level supervision balance."""
from isus.stats.compute import (compute_stats, crop_instance_pairs, crop_level_counts, full_image_level_counts,
                                require_instances, scale_edges)
from isus.stats.plots import write_plots
from isus.stats.visibility import mask_visibility

__all__ = ["compute_stats", "crop_instance_pairs", "crop_level_counts", "full_image_level_counts", "scale_edges",
           "require_instances", "write_plots", "mask_visibility"]
