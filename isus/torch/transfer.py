"""How a DataLoader worker's batch reaches the main process: one block of shared memory per batch,
reused once the main process has freed it.

Sending a tensor from a worker moves its storage into shared memory: a new segment, a copy and a
file descriptor per tensor, which the main process receives one by one. :func:`pack` writes the
whole batch into one block instead (every tensor a view of it), so the batch crosses as one
segment. Fresh shared memory is also slow to write (each page is allocated and zeroed on first
touch: 1.2-2.6 ms/MiB on the 2-core test machine, against 0.2-0.6 for memory already mapped), so
each worker keeps a few blocks and refills one when the main process no longer uses it: the main
process marks a block free, in a small shared flag array, when the storage of the batch it
received is deallocated (every tensor of the batch, and any tensor made from them that shares its
memory, is gone). A batch that is never received, or whose tensors are kept, only keeps its block
busy; the worker then writes into a new one. (A process that receives such tensors from the main
process in turn does not hold the block: send it clones.)
"""
from __future__ import annotations

import weakref
from typing import Any, Callable, Iterator

import numpy as np
import torch

__all__ = ["pack"]

_ALIGN = 64  # bytes: every packed tensor starts on a cache line (and at a multiple of its item size)
_SLOTS = 4  # blocks kept per worker: the batches in flight (prefetch_factor 2) and the one in use
_HEADROOM = 1.25  # a new block's capacity over the batch that needs it: batch sizes vary with instances
#: torch's allocator of a storage in shared memory (under the current sharing strategy), which
#: torch's default_collate uses in workers too
_new_shared: Callable[[int], torch.UntypedStorage] = torch.UntypedStorage._new_shared


class _Pool:
    """A worker's blocks and their flags (1: in flight or in use in the main process)."""

    def __init__(self) -> None:
        self.flags = _bytes(_new_shared(_SLOTS)).zero_()
        self.blocks: list[torch.Tensor | None] = [None] * _SLOTS

    def take(self, nbytes: int) -> tuple[int, torch.Tensor]:
        """A free block of at least ``nbytes`` and its slot (-1: an extra block, not kept)."""
        busy = self.flags.numpy()
        free = [i for i in range(_SLOTS) if not busy[i]]
        if not free:
            return -1, _bytes(_new_shared(max(nbytes, 1)))
        fits = [i for i in free if (b := self.blocks[i]) is not None and b.numel() >= nbytes]
        if fits:
            i = min(fits, key=lambda k: self._size(k))
        else:  # replace the smallest free block (the main process no longer maps it)
            i = min(free, key=lambda k: self._size(k))
            mib = 2**20
            self.blocks[i] = _bytes(_new_shared(max(-(-int(nbytes * _HEADROOM) // mib) * mib, mib)))
        busy[i] = 1
        block = self.blocks[i]
        assert block is not None  # filled above
        return i, block

    def _size(self, i: int) -> int:
        b = self.blocks[i]
        return 0 if b is None else b.numel()


_pool: _Pool | None = None  # this process's (a worker's), made on first use


class _Packed(dict[str, Any]):
    """A worker's batch packed into a pooled block: pickled as a plain dict plus what the
    receiving process needs to mark the block free when it is done with it."""

    def __init__(self, items: dict[str, Any], block: torch.Tensor, flags: torch.Tensor, slot: int) -> None:
        super().__init__(items)
        self.block, self.flags, self.slot = block, flags, slot

    def __reduce__(self) -> tuple[Callable[..., dict[str, Any]], tuple[Any, ...]]:
        return _received, (dict(self), self.block, self.flags, self.slot)


def _received(batch: dict[str, Any], block: torch.Tensor, flags: torch.Tensor, slot: int) -> dict[str, Any]:
    """Unpickling a packed batch (in the main process): its tensors share ``block``'s storage (one
    per segment in a process), whose deallocation frees the worker's slot."""
    if slot >= 0:
        weakref.finalize(block.untyped_storage(), _release, flags, slot)
    return batch


def _release(flags: torch.Tensor, slot: int) -> None:
    flags[slot] = 0


def pack(out: dict[str, Any], stacks: dict[str, list[torch.Tensor]]) -> dict[str, Any]:
    """``out`` with the ``stacks`` stacked and every CPU tensor not in shared memory (also inside
    lists) replaced by a view of one block of shared memory holding them all. The values, dtypes
    and shapes are those of ``torch.stack`` and the tensors given."""
    global _pool

    def place(t: object) -> bool:
        return isinstance(t, torch.Tensor) and t.device.type == "cpu" and not t.untyped_storage().is_shared()

    sizes: list[tuple[torch.dtype, tuple[int, ...]]] = []
    for key, value in out.items():
        if key in stacks:
            first = stacks[key][0]
            sizes.append((first.dtype, (len(stacks[key]), *first.shape)))
        elif place(value):
            sizes.append((value.dtype, tuple(value.shape)))
        elif isinstance(value, list):
            sizes += [(v.dtype, tuple(v.shape)) for v in value if place(v)]
    offsets, total = [], 0
    for dtype, shape in sizes:
        offsets.append(total)
        total += -(-_nbytes(dtype, shape) // _ALIGN) * _ALIGN
    if _pool is None:
        _pool = _Pool()
    slot, block = _pool.take(total)
    views: Iterator[torch.Tensor] = iter(
        block[off:off + _nbytes(dtype, shape)].view(dtype).view(shape) for off, (dtype, shape) in zip(offsets, sizes))
    packed: dict[str, Any] = {}
    for key, value in out.items():
        if key in stacks:
            packed[key] = torch.stack(stacks[key], out=next(views))
        elif place(value):
            packed[key] = next(views).copy_(value)
        elif isinstance(value, list):
            packed[key] = [next(views).copy_(v) if place(v) else v for v in value]
        else:
            packed[key] = value
    return _Packed(packed, block, _pool.flags, slot)


def _bytes(storage: torch.UntypedStorage) -> torch.Tensor:
    return torch.empty(0, dtype=torch.uint8).set_(storage)


def _nbytes(dtype: torch.dtype, shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
