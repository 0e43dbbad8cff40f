"""CropSpecs per second for CUS and ISUS on an MVD-sized (simulated) index.

Baseline, measured in the same run: the obvious per-sample Python loop over the same index
(class -> image -> instance -> level -> σ -> window with Python's random module and the Index
query methods), the way a hand-written sampler does it.

Usage: python bench/sampler.py [--images 18000] [--samples 200000]
"""
from __future__ import annotations

import argparse
import math
import random
import time

import numpy as np

import isus
from isus.sampling import SamplerConfig, SamplingPolicy
from isus.torch import CropSampler


def loop_sampler(index, cfg: SamplerConfig, n: int, seed: int = 0) -> list:
    """Per-sample Python ISUS, for comparison (windows around an anchor only)."""
    rnd = random.Random(seed)
    classes = [c for c in index.present_categories() if c.evaluate]
    levels = cfg.levels
    out = []
    for _ in range(n):
        c = rnd.choice(classes)
        images, _ = index.images_with_class(c.id)
        image = int(images[rnd.randrange(len(images))])
        info = index.image_info(image)
        base = cfg.shortest_side / min(info.height, info.width) if cfg.shortest_side else 1.0
        inst = index.instances_of(c.id, image) if c.isthing else None
        if inst is not None and (~inst.iscrowd).any():
            k = rnd.choice(np.flatnonzero(~inst.iscrowd))
            level = rnd.choice(levels.levels)
            lo, hi = levels.interval(level)
            x0, y0, x1, y1 = inst.box[k]
            size = math.sqrt((x1 - x0) * (y1 - y0)) * base
            sigma = min(max(math.exp(rnd.uniform(math.log(lo / size), math.log(hi / size))), cfg.thing_scale_range[0]),
                        cfg.thing_scale_range[1])
            px, py = inst.anchors[k][rnd.randrange(inst.anchors.shape[1])]
        else:
            sigma = rnd.uniform(*cfg.stuff_scale_range)
            px, py = index.class_anchors(c.id, image)[0]
        t = base * sigma
        ww, wh = cfg.crop_size[0] / t, cfg.crop_size[1] / t
        x0 = px + 1 - ww + rnd.random() * (ww - 1)
        y0 = py + 1 - wh + rnd.random() * (wh - 1)
        out.append((image, c.id, t, (x0, y0, x0 + ww, y0 + wh)))
    return out


def rate(fn, n: int) -> float:
    t = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=18000)
    ap.add_argument("--samples", type=int, default=200000)
    args = ap.parse_args()
    t = time.perf_counter()
    index = isus.synth.simulated_index(args.images)
    print(f"simulated MVD-sized index: {index.num_images} images, {len(index.instances)} instances, "
          f"{len(index.categories)} classes (made in {time.perf_counter() - t:.1f} s)\n")
    n = args.samples
    print(f"{'':24s}{'vectorised draw':>18s}{'CropSampler iter':>18s}{'Python loop':>14s}{'draw/loop':>11s}")
    for mode in ("cus", "isus"):
        cfg = SamplerConfig.preset("mvd", mode=mode)
        policy = SamplingPolicy(index, cfg)
        policy.draw(np.random.default_rng(0), 1000)  # warm caches
        r_draw = rate(lambda: policy.draw(np.random.default_rng(1), n), n)
        sampler = CropSampler(index, cfg, n, seed=0, policy=policy)
        r_iter = rate(lambda: sum(1 for _ in sampler), n)
        m = max(2000, n // 100)
        r_loop = rate(lambda: loop_sampler(index, cfg, m), m)
        print(f"{mode.upper():24s}{r_draw:14,.0f}/s  {r_iter:14,.0f}/s  {r_loop:10,.0f}/s  {r_draw / r_loop:8.0f}x")
    print("\ntarget: >= 100,000 CropSpecs/s on one core (CropSampler iteration, one CropSpec object each)")


if __name__ == "__main__":
    main()
