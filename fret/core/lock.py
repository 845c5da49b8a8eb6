"""One writer per folder: a run folder (`fret run` / `generate`) or a model output (`fret train`).

The lock is an flock on FOLDER/.lock, released by the OS when the holder exits, however it exits
(kill -9 included), so a lock left by a killed process is simply taken by the next command; the
pid written in the file is only there to be named.
"""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

from .errors import RunError

LOCK = ".lock"


@contextmanager
def folder_lock(folder: Path, what: str = "run folder"):
    """Hold FOLDER/.lock for one command: a second writer stops at once, naming the holder's pid."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise RunError(f"{what} {folder} is in use by another fret command (pid {holder}); "
                           f"wait for it to finish (or stop it), then run this again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
