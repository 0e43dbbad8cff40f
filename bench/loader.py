"""End-to-end loader throughput: CropSampler + PanopticCropDataset through a torch DataLoader.

Two parts, on 12 Mpx synthetic MVD images with the MVD preset (1024x1024 ISUS crops):

1. **CPU time per sample, dense vs compact targets**: ``CropEngine`` + ``sample_to_tensors`` with
   the default ``CropConfig`` (masks, semantic and crowd maps built on the CPU) and with
   ``compact_targets=True`` (segment map + tables; ``isus.torch.expand_targets`` rebuilds them on
   the device), interleaved crop by crop on the same specs, thread CPU time; also the bytes a
   crop sends to the main process.
2. **Samples/s for 0, 1 and 2 DataLoader workers**, without caches (whole-image decode, full
   annotation PNG) and with the index's image and annotation caches, dense and compact targets,
   in interleaved rounds; the baseline of each row is ``num_workers=0`` of the same caches and
   targets, measured in the same rounds. Besides wall-clock samples/s: CPU ms per sample of the
   main process and of the workers (``RUSAGE_CHILDREN``), the first batch's latency, and each
   process's RSS growth after warm-up (it must stay flat: the index and caches are memory-mapped
   or read through the page cache; nothing accumulates).

The machine's other load is measured too (``/proc/stat`` busy time minus this benchmark's own CPU
time, in cores): on a shared machine wall-clock rates depend on it, CPU ms per sample much less.

``--breakdown`` adds what the loader's costs were traced to: rows with a plain collate (each map
``torch.stack``-ed, every tensor its own storage, as ``collate_crops`` did before it packed a
worker's batch into one shared block), the cost of writing fresh shared memory against reused
private memory, ``torch.stack`` against numpy's stack of 1024x1024 int64 maps in the main
process, and the first crops of a fresh process (a worker whose parent never cropped: the numba
kernels are loaded from their on-disk cache there).

Usage: python bench/loader.py [--samples 96] [--rounds 3] [--size 4032x3024] [--images 6] [--data DIR]
       [--breakdown] [--quick]
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))

import isus  # noqa: E402
from _common import parse_size, synthetic_mvd  # noqa: E402
from isus.crop import CropConfig, CropEngine  # noqa: E402
from isus.torch import CropSampler, PanopticCropDataset, collate_crops, sample_to_tensors  # noqa: E402


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def busy_seconds() -> float:
    """CPU seconds all processes on the machine spent busy (``/proc/stat``, every core)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_seconds() -> float:
    """CPU seconds of this process and its finished children."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class Probed(PanopticCropDataset):
    """Also reports which process made the sample and its RSS."""

    def __getitem__(self, spec):
        out = super().__getitem__(spec)
        out["pid"], out["rss"] = os.getpid(), rss_mib()
        return out


def plain_collate(batch):
    """``collate_crops`` as it was before it packed worker batches: ``torch.stack`` and one
    storage (one shared-memory segment and file descriptor in transit) per tensor."""
    out = {}
    for key in batch[0]:
        values = [b[key] for b in batch]
        if key in ("image", "panoptic", "semantic", "crowd") and len({tuple(v.shape) for v in values}) == 1:
            out[key] = torch.stack(values)
        elif key in ("scale", "dropped"):
            out[key] = torch.tensor(values)
        elif key == "flip":
            out[key] = torch.tensor(values, dtype=torch.bool)
        else:
            out[key] = values
    return out


def memory_costs() -> None:
    """Writing fresh shared memory (what a worker's batch goes into) and fresh or reused private
    memory, per MiB; torch.stack and np.stack of 4 maps of 1024x1024 int64 in this process."""
    n = 28 * 2**20
    src = torch.from_numpy(np.random.default_rng(0).integers(0, 255, n, dtype=np.uint8))
    reused = torch.empty(n, dtype=torch.uint8)

    def shm() -> None:
        torch.empty(0, dtype=torch.uint8).set_(torch.UntypedStorage._new_shared(n)).copy_(src)

    def fresh() -> None:
        torch.empty(n, dtype=torch.uint8).copy_(src)

    maps = [torch.from_numpy(np.random.default_rng(k).integers(0, 200, (1024, 1024))) for k in range(4)]
    ms = {}
    for name, f in (("fresh shared memory", shm), ("fresh private memory", fresh),
                    ("reused private memory", lambda: reused.copy_(src)),
                    ("torch.stack", lambda: torch.stack(maps)),
                    ("np.stack", lambda: np.stack([m.numpy() for m in maps]))):
        times = []
        for _ in range(9):
            t = time.perf_counter()
            f()
            times.append(time.perf_counter() - t)
        ms[name] = 1e3 * float(np.median(times))
    print("  writing 28 MiB (median of 9): " + ", ".join(f"{k} {v / 28:.2f} ms/MiB" for k, v in list(ms.items())[:3]))
    print(f"  4 x 1024x1024 int64 maps stacked in the main process (torch threads: {torch.get_num_threads()}): "
          f"torch.stack {ms['torch.stack']:.1f} ms, np.stack {ms['np.stack']:.1f} ms")


FIRST_CROPS = """
import sys, time
import isus
from isus.crop import CropConfig, CropEngine
from isus.torch import CropSampler
index = isus.Index.load(sys.argv[1])
ds = index.open_dataset()
specs = list(CropSampler(index, isus.SamplerConfig.preset("mvd"), 3, seed=7))
engine = CropEngine(ds, index, CropConfig())
for spec in specs:
    t = time.process_time()
    engine(spec)
    print(f"{1e3 * (time.process_time() - t):.0f}")
"""


def first_crops(index_path: Path) -> None:
    """CPU time of the first three crops of a fresh interpreter (what a worker pays when its
    parent process never cropped)."""
    import subprocess

    res = subprocess.run([sys.executable, "-c", FIRST_CROPS, str(index_path)], capture_output=True, text=True,
                         check=True)
    ms = res.stdout.split()
    print(f"  first three crops of a fresh process (numba kernels loaded from their cache by the first): "
          f"{' / '.join(ms)} ms CPU")


def tensor_bytes(d: dict) -> int:
    return sum(v.numel() * v.element_size() for v in d.values() if isinstance(v, torch.Tensor))


def per_sample_cpu(ds, index, specs) -> None:
    """Part 1: thread CPU time of engine + tensors per crop, dense and compact interleaved."""
    engines = {name: CropEngine(ds, index, CropConfig(compact_targets=name == "compact"))
               for name in ("dense", "compact")}
    for e in engines.values():  # warm up: JIT caches loaded, first-use checks done
        for s in specs[:4]:
            sample_to_tensors(e(s))
    ms: dict[str, list[float]] = {"dense": [], "compact": []}
    sizes: dict[str, list[int]] = {"dense": [], "compact": []}
    instances = []
    for k, spec in enumerate(specs):
        order = ("dense", "compact") if k % 2 == 0 else ("compact", "dense")
        for name in order:
            t = time.thread_time()
            out = sample_to_tensors(engines[name](spec))
            ms[name].append(1e3 * (time.thread_time() - t))
            sizes[name].append(tensor_bytes(out))
        instances.append(len(out["labels"]))
    ratio = np.array(ms["compact"]) / np.array(ms["dense"])
    print(f"1. CPU time per sample, CropEngine + sample_to_tensors, one thread, interleaved crop by crop "
          f"({len(specs)} crops, instances per crop median {np.median(instances):.0f}, max {max(instances)})\n")
    for name in ("dense", "compact"):
        v = np.array(ms[name])
        print(f"  {name:8s}: median {np.median(v):5.1f} ms  (quartiles {np.percentile(v, 25):.1f}-"
              f"{np.percentile(v, 75):.1f})   sent per crop: median {np.median(sizes[name]) / 2**20:5.1f} MiB, "
              f"max {max(sizes[name]) / 2**20:.1f} MiB")
    print(f"  compact / dense, per crop: median {np.median(ratio):.2f}x  (quartiles {np.percentile(ratio, 25):.2f}-"
          f"{np.percentile(ratio, 75):.2f}x)\n")


def run_loader(ds, index, cfg, samples: int, caches: bool, compact: bool, workers: int, plain: bool = False) -> dict:
    dataset = Probed(ds, index, CropConfig(use_cache=caches, compact_targets=compact))
    loader = DataLoader(dataset, sampler=CropSampler(index, cfg, samples, seed=0), batch_size=4,
                        num_workers=workers, collate_fn=plain_collate if plain else collate_crops,
                        persistent_workers=False)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    kids0 = kids.ru_utime + kids.ru_stime
    main0 = time.process_time()
    seen, rss, first = 0, {}, None
    t = time.perf_counter()
    for batch in loader:
        if first is None:
            first = time.perf_counter() - t
        for v in batch.values():  # read what arrived, as a model would (a page at a time)
            for x in v if isinstance(v, list) else [v]:
                if isinstance(x, torch.Tensor) and x.numel() and x.dtype != torch.bool:
                    x.reshape(-1)[::512].sum()
        for pid, r in zip(batch["pid"], batch["rss"]):
            rss.setdefault(pid, []).append(r)
        seen += len(batch["pid"])
    wall = time.perf_counter() - t
    del loader  # workers exit: their CPU time is in RUSAGE_CHILDREN from here
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    growth = max(s[-1] - s[len(s) // 4] for s in rss.values())
    return {"rate": seen / wall, "main": 1e3 * (time.process_time() - main0) / seen,
            "workers": 1e3 * (kids.ru_utime + kids.ru_stime - kids0) / seen, "first": 1e3 * (first or 0.0),
            "growth": growth}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=96, help="samples per DataLoader run (batches of 4)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds over all configurations")
    ap.add_argument("--size", default="4032x3024")
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--data", type=Path, default=None, help="reuse (or write) the dataset and index here")
    ap.add_argument("--breakdown", action="store_true",
                    help="also the plain-collate rows and the memory costs the loader's overhead was traced to")
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 images of 1000x750, 16 samples, 1 round")
    args = ap.parse_args()
    if args.quick:
        args.size, args.images, args.samples, args.rounds = "1000x750", 3, 16, 1
    w, h = parse_size(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        base = args.data or Path(tmp)
        root = synthetic_mvd(base / "mvd", args.images, (w, h))
        ds = isus.open_dataset("mvd", root)
        if not (base / "mvd.isusidx").exists():
            isus.build_index(ds, workers=2, cache_dir=base / "mvd.isusidx.cache", image_cache=True).save(base / "mvd.isusidx")
        index = isus.Index.load(base / "mvd.isusidx")
        cfg = isus.SamplerConfig.preset("mvd")
        print(f"{args.images} synthetic MVD images {w}x{h} ({w * h / 1e6:.0f} Mpx), {cfg.crop_size[0]}x{cfg.crop_size[1]} "
              f"ISUS crops (MVD preset), torch {torch.__version__}, {os.cpu_count()} cores, "
              f"load average at start {os.getloadavg()[0]:.1f}\n")
        busy0, own0, t0 = busy_seconds(), own_seconds(), time.perf_counter()
        per_sample_cpu(ds, index, list(CropSampler(index, cfg, max(args.samples, 16), seed=1)))

        configs: list[tuple] = [(caches, compact, workers) for caches in (False, True) for compact in (False, True)
                                for workers in (0, 1, 2)]
        if args.breakdown:
            configs += [(True, compact, 2, True) for compact in (False, True)]
        res: dict[tuple, list[dict]] = {c: [] for c in configs}
        print(f"2. DataLoader(PanopticCropDataset, sampler=CropSampler, batch_size=4, collate_fn=collate_crops), "
              f"{args.samples} samples per run, {args.rounds} interleaved rounds\n")
        for r in range(args.rounds):
            for c in configs:
                res[c].append(run_loader(ds, index, cfg, args.samples, *c))
            print(f"  round {r + 1}/{args.rounds} done (load average {os.getloadavg()[0]:.1f})", flush=True)
        others = (busy_seconds() - busy0 - (own_seconds() - own0)) / (time.perf_counter() - t0)

        print("\n  caches  targets  workers  samples/s (min-max)  vs 0 workers (min-max)  CPU ms/sample main + workers"
              "  first batch  RSS growth")
        for c in configs:
            caches, compact, workers = c[:3]
            rates = np.array([x["rate"] for x in res[c]])
            base_rates = np.array([x["rate"] for x in res[caches, compact, 0]])
            ratio = rates / base_rates  # per round: measured minutes apart at most
            med = {k: float(np.median([x[k] for x in res[c]])) for k in ("main", "workers", "first", "growth")}
            note = "  (plain collate)" if len(c) > 3 else ""
            print(f"  {'yes' if caches else 'no ':6s}  {'compact' if compact else 'dense  '}  {workers:7d}  "
                  f"{np.median(rates):6.1f} ({rates.min():5.1f}-{rates.max():5.1f})  "
                  f"{np.median(ratio):5.2f}x ({ratio.min():.2f}-{ratio.max():.2f})         "
                  f"{med['main']:5.1f} + {med['workers']:5.1f} = {med['main'] + med['workers']:5.1f}  "
                  f"{med['first']:7.0f} ms  {med['growth']:+5.0f} MiB{note}")
        for caches in (False, True):
            for workers in (0, 2):
                d = np.array([x["rate"] for x in res[caches, False, workers]])
                k = np.array([x["rate"] for x in res[caches, True, workers]])
                print(f"  compact / dense, {'with' if caches else 'no'} caches, {workers} workers: "
                      f"{np.median(k / d):.2f}x ({(k / d).min():.2f}-{(k / d).max():.2f})")
        if args.breakdown:
            for compact in (False, True):
                p = np.array([x["rate"] for x in res[True, compact, 2, True]])
                k = np.array([x["rate"] for x in res[True, compact, 2]])
                print(f"  collate_crops / plain collate, with caches, {'compact' if compact else 'dense'}, 2 workers: "
                      f"{np.median(k / p):.2f}x ({(k / p).min():.2f}-{(k / p).max():.2f})")
            print()
            memory_costs()
            first_crops(base / "mvd.isusidx")
        print(f"\nother load on the machine during the run: {others:.2f} cores busy on average "
              f"(of {os.cpu_count()}); load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
