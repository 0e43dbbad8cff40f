"""Per-image work in a pool of processes: the one loop that index building and evaluation share."""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import sys
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterable

log = logging.getLogger("isus")
_STATE: dict[str, Any] = {}


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the platform has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def bounded_workers(workers: int, items: int) -> int:
    """``workers`` capped at the usable cores and at ``items`` (at least 1).

    More processes than cores only add memory (each worker holds its own decoded images), and
    ``--workers 10000`` would start thousands of processes. Capping below the request because of
    the cores is logged once as a warning on the ``isus`` logger (printed on stderr when logging is
    not configured); capping at the number of items is silent.
    """
    cores = usable_cores()
    if workers > cores and workers != os.cpu_count():  # (os.cpu_count(): the usual default, said by no one)
        log.warning("isus: %d workers requested, this machine lets the process use %d cores: using %d",
                    workers, cores, min(cores, max(items, 1)))
    return max(1, min(workers, cores, items))


def _die_with_parent(parent: int) -> None:
    """Linux: have the kernel SIGKILL this worker when its parent dies (even by SIGKILL, which
    leaves the pool no chance to stop it), so no orphaned worker keeps running."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl (an unusual libc): the pool's own shutdown remains
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _init(fn: Callable[[Any, Any], Any], state: Any, parent: int | None = None) -> None:
    if parent is not None:
        _die_with_parent(parent)
    _STATE["fn"], _STATE["state"] = fn, state


def _call(item: Any) -> tuple[Any, Any]:
    return item, _STATE["fn"](_STATE["state"], item)


def run_parallel(fn: Callable[[Any, Any], Any], state: Any, items: Iterable[Any], workers: int,
                 on_done: Callable[[Any, Any], None]) -> None:
    """Call ``fn(state, item)`` for every item, in this process when ``workers <= 1``, else in
    ``workers`` forked processes (``state`` is sent to each once); ``on_done(item, result)``
    runs in this process as results arrive, in completion order.

    At most ``2 * workers`` items are in flight, so results never pile up in memory. An error in a
    worker is raised here and cancels what is still queued. ``workers`` is bounded by
    :func:`bounded_workers` (the usable cores and the number of items).
    """
    items = list(items)
    workers = bounded_workers(workers, len(items))
    if workers <= 1 or len(items) <= 1:
        for item in items:
            on_done(item, fn(state, item))
        return
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init,
                               initargs=(fn, state, os.getpid()))
    pending: set[Future[tuple[Any, Any]]] = set()
    it = iter(items)
    try:
        while True:
            while len(pending) < 2 * workers:
                item = next(it, _END)
                if item is _END:
                    break
                pending.add(pool.submit(_call, item))
            if not pending:
                break
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                on_done(*fut.result())
    finally:
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


_END = object()
