"""Progress of a long command with an estimate of the time left: a live bar on a terminal, and
in a log (stderr not a terminal) one line after the first item, then every `every` seconds, and
one at the end:

    fret train: step 5/14 (36%), 1m10s elapsed, about 2m06s left; loss 0.4123

`FRET_PROGRESS_EVERY` (seconds) sets the interval of the log lines (default 30).
"""
from __future__ import annotations

import os
import sys
import time
from typing import Optional, TextIO


def clock(seconds: float) -> str:
    """clock(0.4) -> '0s'; clock(70) -> '1m10s'; clock(3725) -> '1h02m'"""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """Counts `total` units of work (steps, pairs, texts) and shows how long the rest will take."""

    def __init__(self, total: int, desc: str, unit: str = "step", initial: int = 0,
                 enabled: bool = True, every: Optional[float] = None, stream: TextIO = None):
        self.total, self.desc, self.unit, self.done = total, desc, unit, initial
        self.stream = stream or sys.stderr
        self.enabled = enabled and total > 0
        self.every = every if every is not None else float(os.environ.get("FRET_PROGRESS_EVERY", 30))
        self.started = self.last = time.monotonic()
        self.initial, self.lines = initial, 0
        self.note = ""
        self.bar = None
        if self.enabled and self._tty():
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True,
                            leave=False, file=self.stream)

    def _tty(self) -> bool:
        return hasattr(self.stream, "isatty") and self.stream.isatty()

    def left(self) -> Optional[float]:
        """Seconds left at the rate of this process so far; None before the first unit."""
        made = self.done - self.initial
        if made <= 0:
            return None
        return (time.monotonic() - self.started) / made * (self.total - self.done)

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        left = self.left()
        eta = "" if left is None else f", about {clock(left)} left"
        note = f"; {self.note}" if self.note else ""
        return (f"{self.desc}: {self.unit} {self.done}/{self.total} ({100 * self.done // self.total}%), "
                f"{clock(elapsed)} elapsed{eta}{note}")

    def update(self, n: int = 1, note: str = "") -> None:
        self.done += n
        self.note = note or self.note
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(n)
            if note:
                self.bar.set_postfix_str(note, refresh=False)
            return
        now = time.monotonic()
        if self.lines == 0 or now - self.last >= self.every or self.done >= self.total:
            print(self.line(), file=self.stream, flush=True)
            self.last, self.lines = now, self.lines + 1

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
