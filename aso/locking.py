"""One pass at a time per component: a non-blocking file lock per component name.

cron may start a pass while the previous one still runs; the second must notice and exit
quietly instead of doing the same work twice. The lock is released by the OS when the
process dies, so a kill -9 never leaves a stale lock behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from aso.validate import path_part


class LockHeld(Exception):
    """Another pass of the same component holds the lock."""


@contextmanager
def component_lock(lock_dir: str | Path, name: str) -> Iterator[Path]:
    """Hold ``<lock_dir>/<name>.lock`` for the duration, or raise LockHeld at once."""
    path_part(name, "component")
    directory = Path(lock_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.lock"
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise LockHeld(f"another '{name}' pass holds {path}; this one does nothing") from None
    try:
        yield path
    finally:
        lock.release()
