"""Index builds under ``torchrun``: each rank builds its shard, rank 0 merges."""
from __future__ import annotations

import os
from pathlib import Path

from isus.datasets.base import PanopticDataset
from isus.index.build import build_index, merge_indexes, remove_checkpoint
from isus.index.image_cache import ImageCacheParams
from isus.index.index import Index


def build_index_distributed(ds: PanopticDataset, out: str | Path, *, workers: int | None = None, grid: int = 16,
                            cache_dir: str | Path | None = None, resume: bool = False,
                            image_cache: bool | ImageCacheParams = False) -> Index | None:
    """Build ``ds``'s index across the ranks of a ``torch.distributed`` job and write ``out``.

    Initialises a gloo process group from torchrun's environment if none exists. Each rank
    writes ``OUT.part{rank}of{world}``; rank 0 merges them into ``out`` (identical to a
    single-process build), removes the parts and returns the index; other ranks return None.
    """
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    out = Path(out)
    if workers is None:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        workers = max(1, (os.cpu_count() or 1) // local)
    part = out.with_name(f"{out.name}.part{rank}of{world}")
    partial = out.with_name(f"{out.name}.partial{rank}of{world}")
    index = build_index(ds, workers=workers, progress=rank == 0, grid=grid, cache_dir=cache_dir,
                        shard=(rank, world), checkpoint_dir=partial, resume=resume, image_cache=image_cache)
    index.save(part)
    remove_checkpoint(partial)
    dist.barrier()
    result = None
    if rank == 0:
        parts = [out.with_name(f"{out.name}.part{r}of{world}") for r in range(world)]
        merged = merge_indexes(parts)
        merged.save(out)
        for p in parts:
            p.unlink()
        result = Index.load(out)
        result.prune_cache()
    dist.barrier()
    return result
