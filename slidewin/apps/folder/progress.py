"""Progress of a folder run: a tqdm bar on a terminal, a line every 30 s in logs."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from slidewin.errors import printable
from slidewin.io.stderr import STDERR_LOCK, share_lock_with_tqdm

_LOG_EVERY_SECONDS = 30.0


class Progress:
    """Reports a run of ``total`` images, ``initial`` of them done by an earlier run.

    Args:
        enabled: show the bar (None: when stderr is a terminal). Without it, a line with the
            rate and the time left is printed every 30 s instead.
        unit: what is counted, for the log lines (``frames`` for a video; the bar says ``img``
            or the unit in the singular). ``total`` None: not known (no time left said).
    """

    def __init__(self, total: int | None, initial: int, enabled: bool | None = None, unit: str = "images"):
        from tqdm import tqdm

        share_lock_with_tqdm()  # the bar never writes while a decode captures stderr
        self.total, self.initial, self.unit = total, initial, unit
        self.short_unit = "img" if unit == "images" else unit.rstrip("s")  # a disabled bar keeps no .unit
        self.bar = tqdm(total=total, initial=initial, unit=self.short_unit,
                        file=sys.stderr, dynamic_ncols=True,
                        disable=(not sys.stderr.isatty()) if enabled is None else not enabled, smoothing=0.1)
        self.t_start = self.last_log = time.perf_counter()
        self.done = 0

    def failed(self, path: str | Path, error: str, failed_now: int) -> None:
        """Say that an image failed, and why, without breaking the bar."""
        self.bar.write(f"slidewin: {printable(str(path))}: {error}", file=sys.stderr)
        self.bar.set_postfix_str(f"{failed_now} failed", refresh=False)

    def advance(self) -> None:
        """One more image done."""
        self.done += 1
        self.bar.update()
        now = time.perf_counter()
        left = None if self.total is None else self.total - self.initial - self.done
        if self.bar.disable and now - self.last_log >= _LOG_EVERY_SECONDS and (left is None or left > 0):
            self.last_log = now
            rate = self.done / (now - self.t_start)
            done = f"{self.initial + self.done}" + ("" if self.total is None else f"/{self.total}")
            eta = "" if left is None else f", about {left / rate / 60:.1f} min left"
            with STDERR_LOCK:
                print(f"slidewin: {done} {self.unit}, {rate:.2f} {self.short_unit}/s{eta}", file=sys.stderr,
                      flush=True)

    def close(self) -> None:
        self.bar.close()
