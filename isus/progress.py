"""Progress of long per-image work on stderr: click's bar on a terminal, plain lines in a log file."""
from __future__ import annotations

import sys
import time


class Progress:
    """Called as ``progress(done, total)``. On a terminal, click's bar with images/s and ETA; when
    stderr goes to a log file (where a bar prints nothing), a line every 5 % (at most every 2 s,
    at least every 60 s) and at the end.

    ``done``: images already done before this run (a resumed build); the rate counts this run's.
    ``unit``: what is counted (``"images"``; the commands also count ``"batches"`` of crops).
    """

    def __init__(self, total: int, label: str, done: int = 0, unit: str = "images") -> None:
        self.total, self.label, self.unit = total, label, unit
        self.t0 = self.t_last = time.perf_counter()
        self.first = self.done = self.last_done = done
        self.bar = None
        if sys.stderr.isatty():
            import click

            self.bar = click.progressbar(length=total, label=label, show_eta=True, show_pos=True, file=sys.stderr,
                                         item_show_func=lambda item: item)
            self.bar.__enter__()
            if done:
                self.bar.update(done)

    def __call__(self, done: int, total: int) -> None:
        step, self.done = done - self.done, done
        now = time.perf_counter()
        rate = (done - self.first) / max(now - self.t0, 1e-9)
        if self.bar is not None:
            self.bar.update(step, current_item=f"{rate:.1f} {self._per_s}")
            return
        due = done - self.last_done >= max(1, total // 20) and now - self.t_last >= 2
        if due or now - self.t_last >= 60 or done == total:
            eta = (total - done) / rate if rate > 0 else float("nan")
            print(f"{self.label}: {done}/{total} {self.unit} ({100 * done / max(total, 1):.0f}%), {rate:.1f} {self._per_s}, "
                  f"ETA {eta:.0f} s", file=sys.stderr, flush=True)
            self.t_last, self.last_done = now, done

    @property
    def _per_s(self) -> str:
        return "img/s" if self.unit == "images" else f"{self.unit}/s"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
