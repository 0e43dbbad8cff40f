"""End-to-end loader throughput: CropSampler + PanopticCropDataset through a torch DataLoader.

Prints samples/s with 0 and 2 workers (baseline: 0 workers, measured in the same run) and each
worker's RSS over the run, sampled every 250 samples: it must stay flat (the index is
memory-mapped and shared; nothing accumulates).

Usage: python bench/loader.py [--samples 2000] [--size 1600x1200] [--crop 512]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from torch.utils.data import DataLoader

import isus
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
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--size", default="1600x1200")
    ap.add_argument("--crop", type=int, default=512)
    ap.add_argument("--images", type=int, default=24)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        root = isus.synth.write_dataset(Path(tmp) / "mvd", "mvd", args.images, size=(w, h))
        ds = isus.open_dataset("mvd", root)
        isus.build_index(ds, workers=2, cache_dir=Path(tmp) / "cache").save(Path(tmp) / "mvd.isusidx")
        index = isus.Index.load(Path(tmp) / "mvd.isusidx")
        cfg = isus.SamplerConfig(crop_size=(args.crop, args.crop), shortest_side=min(w, h))
        print(f"{args.images} synthetic MVD images {w}x{h}, {args.crop}x{args.crop} ISUS crops, batch 8, "
              f"{args.samples} samples\n")
        rates = {}
        for workers in (0, 2):
            loader = DataLoader(Probed(ds, index), sampler=CropSampler(index, cfg, args.samples, seed=0),
                                batch_size=8, num_workers=workers, collate_fn=collate_crops,
                                persistent_workers=False)
            seen, rss = 0, {}
            t = time.perf_counter()
            for batch in loader:
                for pid, r in zip(batch["pid"], batch["rss"]):
                    rss.setdefault(pid, []).append((seen, r))
                    seen += 1
            rates[workers] = seen / (time.perf_counter() - t)
            print(f"num_workers={workers}: {rates[workers]:6.1f} samples/s"
                  + ("" if workers == 0 else f"  ({rates[workers] / rates[0]:.2f}x num_workers=0)"))
            for pid, series in rss.items():
                pts = [r for s, r in series]
                marks = [pts[int(q * (len(pts) - 1))] for q in (0, 0.25, 0.5, 0.75, 1.0)]
                print(f"  process {pid}: RSS at 0/25/50/75/100% of its samples: "
                      + " / ".join(f"{m:.0f}" for m in marks) + f" MiB  (growth after warm-up: "
                      f"{marks[-1] - marks[1]:+.0f} MiB)")


if __name__ == "__main__":
    main()
