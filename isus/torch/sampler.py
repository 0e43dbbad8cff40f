"""``CropSampler``: CUS/ISUS crops as a deterministic, distributed-aware, resumable Sampler."""
from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler

from isus.errors import IsusError
from isus.index import Index
from isus.sampling.config import SamplerConfig
from isus.sampling.policy import CropBatch, SamplingPolicy
from isus.types import CropSpec

__all__ = ["CropSampler", "SamplerStateError"]

#: Samples per independently seeded block of an epoch's stream.
BLOCK = 4096
#: 2: the state carries the sampler configuration and the index fingerprint.
_STATE_VERSION = 2
_REQUIRED = ("version", "seed", "epoch", "position", "rank", "world_size")


class SamplerStateError(IsusError, ValueError):
    """A state given to :meth:`CropSampler.load_state_dict` is incomplete or comes from another
    configuration, index, seed or world: resuming from it would draw a different stream.
    (Also a ``ValueError``, which it was before it had its own class.)"""


def _describe(value: Any) -> str:
    text = repr(value)
    # An object without its own repr shows its address, which differs in every process.
    return f"{type(value).__module__}.{type(value).__qualname__}" if " at 0x" in text else text


def config_description(config: SamplerConfig, policy: SamplingPolicy) -> dict[str, str]:
    """What the stream depends on besides seed, epoch and index: every field of the config and
    the policy's class, as strings (compared field by field when a state is loaded)."""
    out = {f.name: _describe(getattr(config, f.name)) for f in dataclasses.fields(config)}
    out["policy"] = f"{type(policy).__module__}.{type(policy).__qualname__}"
    return out


def index_fingerprint(index: Index) -> dict[str, Any]:
    """A content digest of the index (:meth:`Index.content_digest <isus.Index.content_digest>`:
    its arrays, categories and image range; not where it or its dataset are stored, so a copied
    or moved index matches) and, for messages, its size."""
    ds = index.info.dataset
    return {"digest": index.content_digest(), "dataset": ds.name, "num_images": ds.num_images}


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
        self._index_fp: dict[str, Any] | None = None  # computed on first use (hashes the arrays)

    def __len__(self) -> int:
        return -(-self.num_samples // self.world_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's stream (call before iterating, as with ``DistributedSampler``)."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"CropSampler.set_epoch(epoch=) expects a non-negative int; got {epoch!r}")
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

    def index_fingerprint(self) -> dict[str, Any]:
        """:func:`index_fingerprint` of this sampler's index (computed once: it reads every array)."""
        if self._index_fp is None:
            self._index_fp = index_fingerprint(self.index)
        return self._index_fp

    def state_dict(self, num_consumed: int | None = None) -> dict[str, Any]:
        """Where the stream is. A DataLoader pulls indices ahead of training; pass how many
        samples this rank actually consumed (e.g. ``batches_done * batch_size``) to resume
        exactly after them; by default, the number yielded so far.

        Besides the position, the state records what the stream depends on -- the seed, the
        world, the sampler configuration (``config``) and a fingerprint of the index (``index``) --
        so that :meth:`load_state_dict` can refuse a state from another run."""
        position = self._position if num_consumed is None else int(num_consumed)
        return {"version": _STATE_VERSION, "seed": self.seed, "epoch": self.epoch, "position": position,
                "num_samples": self.num_samples, "rank": self.rank, "world_size": self.world_size,
                "config": config_description(self.config, self.policy), "index": dict(self.index_fingerprint())}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        """Continue a stream saved by :meth:`state_dict`.

        The state must come from the same seed, world size and rank, sampler configuration and
        index (same content); otherwise the resumed run would silently draw another stream, so
        :class:`SamplerStateError` says what differs. ``num_samples`` may differ (e.g. to extend
        a run: the stream does not depend on it), and ``rank``/``position`` may be replaced by the
        caller (``{**state, "rank": rank, "position": consumed}``).

        Parameters
        ----------
        strict
            ``False`` skips the configuration and index comparison (and accepts a version-1 state,
            which has neither): a deliberate override, e.g. to continue a run on a rebuilt index
            after fixing a few annotations, knowing the stream continues differently from there.
            Seed and world are checked either way.
        """
        if not isinstance(state, dict):
            raise SamplerStateError(f"CropSampler.load_state_dict(state=) expects the dict from state_dict(); "
                                    f"got {type(state).__name__}")
        version = state.get("version")
        if version != _STATE_VERSION and not (version == 1 and not strict):
            hint = (" (saved by an older isus, without the configuration and index fingerprint: pass strict=False "
                    "to load it if it comes from this configuration and index)") if version == 1 else ""
            raise SamplerStateError(f"CropSampler state of version {version!r}; expected {_STATE_VERSION}{hint}")
        required = _REQUIRED + (("config", "index") if strict else ())
        for key in required:
            if key not in state:
                raise SamplerStateError(f"CropSampler state lacks {key!r}: an incomplete state (expected the keys "
                                        f"{', '.join(required)} from state_dict())")
        # num_samples may change (a longer run): sample j depends only on (seed, epoch, j)
        for key in ("seed", "world_size", "rank"):
            if state[key] != getattr(self, key):
                raise SamplerStateError(f"CropSampler state has {key}={state[key]!r}, this sampler "
                                        f"{getattr(self, key)!r}: the stream would differ")
        if strict:
            self._check_origin(state)
        epoch, position = state["epoch"], state["position"]
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise SamplerStateError(f"CropSampler state has epoch={epoch!r}; expected a non-negative int")
        if isinstance(position, bool) or not isinstance(position, (int, np.integer)) or not 0 <= position <= len(self):
            raise SamplerStateError(f"CropSampler state position {position!r} is outside 0..{len(self)}")
        self.epoch, self._position, self._block = int(epoch), int(position), None

    def _check_origin(self, state: dict[str, Any]) -> None:
        saved, now = state["config"], config_description(self.config, self.policy)
        if not isinstance(saved, dict):
            raise SamplerStateError(f"CropSampler state has config={saved!r}; expected the dict from state_dict()")
        diff = [f"{k}: saved {saved.get(k, '(absent)')}, now {now.get(k, '(absent)')}"
                for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
        if diff:
            raise SamplerStateError("CropSampler state was saved with another sampler configuration ("
                                    + "; ".join(diff) + "): the resumed stream would differ. Resume with the "
                                    "saved configuration, or pass strict=False to continue deliberately.")
        saved_ix, now_ix = state["index"], self.index_fingerprint()
        if not isinstance(saved_ix, dict) or saved_ix.get("digest") != now_ix["digest"]:
            def show(fp: object) -> str:
                return (f"{fp.get('digest')} ({fp.get('dataset')}, {fp.get('num_images')} images)"
                        if isinstance(fp, dict) else repr(fp))
            raise SamplerStateError(f"CropSampler state was saved for another index: saved {show(saved_ix)}, this "
                                    f"sampler's index {show(now_ix)}; the resumed stream would differ. Use the index "
                                    "the run started with, or pass strict=False to continue deliberately.")
