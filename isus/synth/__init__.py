"""Synthetic panoptic datasets written in each real dataset's on-disk layout.

No dataset ships with isus, so demos, tests and benchmarks run on these. A scene is a list of
polygons drawn in order (stuff, then things from large to small, then crowd and void), so the
same scene can be written as 16-bit instance PNGs, COCO-style RGB panoptic PNGs and polygon
JSONs, and every reader must decode the same segments from it.

The content is built to exercise what comes downstream: several stuff and thing classes,
thing sizes long-tailed like the paper's Fig. 2 (right) -- from a few pixels to larger than a
1024 crop on MVD-sized images --, crowd regions, void pixels, instances cut by the image
border, and images without any thing (every image whose index is 3 mod 7). Images are
learnable: each class has its own colour and stripe texture, instances their own shade and a
dark outline.
"""
from __future__ import annotations

from isus.synth.realdata import mvd_from_semantic
from isus.synth.scene import PRESETS, SYNTH_CLASSES, Scene, SynthClass, make_scene, render_image
from isus.synth.simulated import simulated_index
from isus.synth.writers import (LAYOUTS, MANIFEST, default_split, read_manifest, scene_of, segment_boxes,
                                write_dataset)

__all__ = ["LAYOUTS", "SynthClass", "SYNTH_CLASSES", "Scene", "make_scene", "render_image", "write_dataset",
           "default_split", "read_manifest", "MANIFEST", "simulated_index", "mvd_from_semantic", "segment_boxes",
           "scene_of", "PRESETS"]
