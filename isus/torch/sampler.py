"""``CropSampler``: CUS/ISUS crops as a deterministic, distributed-aware, resumable Sampler."""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler

from isus.index.index import Index
from isus.sampling.config import SamplerConfig
from isus.sampling.policy import CropBatch, SamplingPolicy
from isus.types import CropSpec

__all__ = ["CropSampler"]

#: Samples per independently seeded block of an epoch's stream.
BLOCK = 4096
_STATE_VERSION = 1


class CropSampler(Sampler[CropSpec]):
    """Yields :class:`~isus.CropSpec` s drawn by CUS/ISUS; pass it as a DataLoader's ``sampler``.

    The epoch's stream is a fixed sequence of ``num_samples`` crops that depends only on
    ``(seed, epoch)``: sample ``j`` comes from block ``j // BLOCK``, drawn with its own generator
    seeded by ``(seed, epoch, block)``. Rank ``r`` of ``world_size`` yields samples ``r, r + world_size,
    ...``: ``ceil(num_samples / world_size)`` each, disjoint, together the stream's first
    ``world_size * ceil(num_samples / world_size)`` samples. The sampler runs in the main process, so
    ``num_workers`` and the start method do not change the stream.

    Parameters
    ----------
    index
        The dataset's :class:`~isus.Index`.
    config
        A :class:`~isus.SamplerConfig`.
    num_samples
        Crops per epoch, over all ranks.
    seed
        Base seed.
    rank, world_size
        Default: from the initialised ``torch.distributed`` process group, else 0 and 1.
    policy
        A :class:`~isus.SamplingPolicy` (subclass) to use instead of the default.
    """

    def __init__(self, index: Index, config: SamplerConfig, num_samples: int, seed: int = 0, *,
                 rank: int | None = None, world_size: int | None = None, policy: SamplingPolicy | None = None) -> None:
        if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
            raise ValueError(f"CropSampler(num_samples=) expects a positive int; got {num_samples!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"CropSampler(seed=) expects a non-negative int; got {seed!r}")
        if world_size is None:
            world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if rank is None:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if not (isinstance(world_size, int) and world_size >= 1 and isinstance(rank, int) and 0 <= rank < world_size):
            raise ValueError(f"CropSampler expects 0 <= rank < world_size; got rank={rank!r}, world_size={world_size!r}")
        self.index, self.config = index, config
        self.policy = policy or SamplingPolicy(index, config)
        self.num_samples, self.seed = int(num_samples), int(seed)
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._position = 0  # samples of this rank already yielded in the current epoch
        self._block: tuple[int, CropBatch] | None = None

    def __len__(self) -> int:
        return -(-self.num_samples // self.world_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's stream (call before iterating, as with ``DistributedSampler``)."""
        if epoch != self.epoch:
            self.epoch, self._position, self._block = int(epoch), 0, None

    def block(self, b: int) -> CropBatch:
        """Block ``b`` of the current epoch's global stream (``BLOCK`` samples)."""
        if self._block is None or self._block[0] != b:
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, self.epoch, b])))
            self._block = (b, self.policy.draw(rng, BLOCK))
        return self._block[1]

    def global_sample(self, j: int) -> CropSpec:
        """Sample ``j`` of the current epoch's global stream."""
        return self.block(j // BLOCK).spec(j % BLOCK)

    def __iter__(self) -> Iterator[CropSpec]:
        while self._position < len(self):
            j = self.rank + self._position * self.world_size
            spec = self.global_sample(j)
            self._position += 1
            yield spec
        self._position = 0
        self._block = None

    def state_dict(self, num_consumed: int | None = None) -> dict[str, Any]:
        """Where the stream is. A DataLoader pulls indices ahead of training; pass how many
        samples this rank actually consumed (e.g. ``batches_done * batch_size``) to resume
        exactly after them; by default, the number yielded so far."""
        position = self._position if num_consumed is None else int(num_consumed)
        return {"version": _STATE_VERSION, "seed": self.seed, "epoch": self.epoch, "position": position,
                "num_samples": self.num_samples, "rank": self.rank, "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue a stream saved by :meth:`state_dict` (same seed and world; ``num_samples``
        may differ, e.g. to extend a run: the stream itself does not depend on it)."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"CropSampler state of version {state.get('version')!r}; expected {_STATE_VERSION}")
        # num_samples may change (a longer run): sample j depends only on (seed, epoch, j)
        for key in ("seed", "world_size", "rank"):
            if state[key] != getattr(self, key):
                raise ValueError(f"CropSampler state has {key}={state[key]!r}, this sampler {getattr(self, key)!r}: "
                                 "the stream would differ")
        if not 0 <= state["position"] <= len(self):
            raise ValueError(f"CropSampler state position {state['position']} is outside 0..{len(self)}")
        self.epoch, self._position, self._block = int(state["epoch"]), int(state["position"]), None
