"""End-to-end loader throughput: CropSampler + PanopticCropDataset through a torch DataLoader.

Prints samples/s with 0 and 2 workers, without caches (whole-image decode, full annotation PNG)
and with the index's image and annotation caches (tiles and rows the crop covers), on 12 Mpx
images with the MVD preset (1024x1024 ISUS crops); the baseline is 0 workers without caches,
measured in the same run. Also each worker's RSS over the run, sampled through the run: it must
stay flat (the index and caches are memory-mapped and shared; nothing accumulates).

Usage: python bench/loader.py [--samples 240] [--size 4032x3024] [--images 6] [--quick]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from torch.utils.data import DataLoader

import isus
from isus.crop import CropConfig
from isus.torch import CropSampler, PanopticCropDataset, collate_crops


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Probed(PanopticCropDataset):
    """Also reports which process made the sample and its RSS."""

    def __getitem__(self, spec):
        out = super().__getitem__(spec)
        out["pid"], out["rss"] = os.getpid(), rss_mib()
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=240)
    ap.add_argument("--size", default="4032x3024")
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 images of 1000x750, 24 samples")
    args = ap.parse_args()
    if args.quick:
        args.size, args.images, args.samples = "1000x750", 3, 24
    w, h = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        root = isus.synth.write_dataset(Path(tmp) / "mvd", "mvd", args.images, size=(w, h))
        ds = isus.open_dataset("mvd", root)
        isus.build_index(ds, workers=2, cache_dir=Path(tmp) / "mvd.isusidx.cache", image_cache=True).save(Path(tmp) / "mvd.isusidx")
        index = isus.Index.load(Path(tmp) / "mvd.isusidx")
        cfg = isus.SamplerConfig.preset("mvd")
        print(f"{args.images} synthetic MVD images {w}x{h} ({w * h / 1e6:.0f} Mpx), {cfg.crop_size[0]}x{cfg.crop_size[1]} "
              f"ISUS crops (MVD preset), batch 4, {args.samples} samples\n")
        rates = {}
        for caches in (False, True):
            for workers in (0, 2):
                dataset = Probed(ds, index, CropConfig(use_cache=caches))
                loader = DataLoader(dataset, sampler=CropSampler(index, cfg, args.samples, seed=0),
                                    batch_size=4, num_workers=workers, collate_fn=collate_crops,
                                    persistent_workers=False)
                seen, rss = 0, {}
                t = time.perf_counter()
                for batch in loader:
                    for pid, r in zip(batch["pid"], batch["rss"]):
                        rss.setdefault(pid, []).append((seen, r))
                        seen += 1
                rate = rates[caches, workers] = seen / (time.perf_counter() - t)
                print(f"{'with caches' if caches else 'no caches  '}, num_workers={workers}: {rate:6.1f} samples/s  "
                      f"({rate / rates[False, 0]:.2f}x no caches, num_workers=0)")
                for pid, series in rss.items():
                    pts = [r for _, r in series]
                    marks = [pts[int(q * (len(pts) - 1))] for q in (0, 0.25, 0.5, 0.75, 1.0)]
                    print(f"  process {pid}: RSS at 0/25/50/75/100% of its samples: "
                          + " / ".join(f"{m:.0f}" for m in marks) + f" MiB  (growth after warm-up: "
                          f"{marks[-1] - marks[1]:+.0f} MiB)")
        print(f"\ncaches / no caches: {rates[True, 0] / rates[False, 0]:.2f}x with 0 workers, "
              f"{rates[True, 2] / rates[False, 2]:.2f}x with 2")


if __name__ == "__main__":
    main()
