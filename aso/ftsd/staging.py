"""Tape emulation: which files are on tape, how long the robot takes, and the robot itself.

A ``file://`` source under one of the service's tape roots is a file on tape: nearline until
a bring-online request recalls it, online (readable) from then until its pin expires and no
queued copy needs it any more. What is recalling, when each recall ends and how long each
file stays pinned are rows of ``t_tape`` in the service's database (``db_staging.py``), so a
restarted service forgets no recall; the :class:`Robot` thread only sweeps that table.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aso.ftsd import urls
from aso.ftsd.errors import FtsHttpError

log = logging.getLogger("aso.fts.staging")

#: the reason FTS3 gives a file whose bring-online did not end in time (its staging
#: daemon's JobError("STAGING", ETIMEDOUT, ...), printed as "<scope> [<errno>] <text>")
BRING_ONLINE_TIMEOUT_REASON = f"STAGING [{errno.ETIMEDOUT}] bring-online timeout has been exceeded"
#: longest bring_online or copy_pin_lifetime accepted (10 years): anything longer is a mistake,
#: and now + it must stay a number SQLite and FTS3's clients handle
MAX_STAGING_SECONDS = 10 * 366 * 86400


@dataclass(frozen=True)
class TapeSettings:
    """``[fts_server] tape_roots, staging_delay_min, staging_delay_max``."""

    #: local folders whose files are on tape (normalised; none: no file is on tape)
    roots: tuple[str, ...] = ()
    #: seconds the emulated robot takes to recall a file: uniform in [min, max], per file
    delay_min: float = 0.0
    delay_max: float = 5.0


def staging_seconds(value: Any, field: str) -> int:
    """``bring_online`` or ``copy_pin_lifetime``: a JSON integer of seconds, -1 (or absent)
    for none. Anything else (other negatives, strings, floats, booleans, more than
    MAX_STAGING_SECONDS) is a 400 naming the field."""
    if value is None:
        return -1
    if isinstance(value, bool) or not isinstance(value, int) or not -1 <= value <= MAX_STAGING_SECONDS:
        raise FtsHttpError(400, f"Invalid value within the request: {field} must be an integer number of seconds"
                                f" from 0 to {MAX_STAGING_SECONDS}, or -1 for none")
    return value


def starts_staging(bring_online: int, copy_pin_lifetime: int) -> bool:
    """FTS3's rule: a job with either value above 0 starts in STAGING."""
    return bring_online > 0 or copy_pin_lifetime > 0


def tape_path(url: str, roots: Sequence[str]) -> str | None:
    """The local path of a ``file://`` URL under a tape root (None: not a file on tape)."""
    if not roots or not url.startswith("file:"):
        return None
    try:
        path = urls.file_path(url)
    except urls.UrlError:
        return None
    return path if urls.under_roots(path, roots) else None


def recall_delay(path: str, delay_min: float, delay_max: float) -> float:
    """Seconds the robot takes to recall ``path``: uniform in [min, max], drawn from the
    path itself, so a rerun of the same files sees the same delays."""
    if delay_max <= delay_min:
        return max(0.0, delay_min)
    draw = int.from_bytes(hashlib.sha256(path.encode("utf-8", "surrogateescape")).digest()[:8], "big") / 2**64
    return delay_min + (delay_max - delay_min) * draw


#: the errno of a read of a nearline file (what a tape system's disk buffer answers: the
#: operation is not supported on a file without a disk copy)
NEARLINE_ERRNO = errno.ENOTSUP


def nearline_message(path: str) -> str:
    """Why a copy of a nearline file failed (after FTS3's ``SOURCE [errno]``): the tape
    system's disk buffer has no copy of it and the job asked for no bring-online. Not
    recoverable: retrying the same job cannot stage it."""
    return f"{path}: the file is NEARLINE (on tape, no disk copy); submit the job with bring_online to stage it first"


@dataclass(frozen=True)
class Sweep:
    """What one sweep of the tape table did."""

    #: files that left STAGING: staged (SUBMITTED, or FINISHED for staging-only) or timed out
    staged: int
    timed_out: int
    evicted: int
    #: the earliest end of a recall still under way (epoch seconds; None: none)
    next_ready: float | None


class Robot:
    """The emulated tape robot: a thread that sweeps the tape table whenever a recall is due
    (or a submission wakes it, or every ``poll_seconds`` for timeouts and pin expiries) and
    lets the executor know when files were staged. Each sweep is one transaction."""

    #: sweeps are at least this far apart, so recalls ending close together are staged at once
    MIN_INTERVAL = 0.05

    def __init__(self, sweep: Callable[[float, bool], Sweep], on_staged: Callable[[], None],
                 poll_seconds: float = 1.0):
        self._sweep = sweep
        self._on_staged = on_staged
        self.poll_seconds = poll_seconds
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="fts-tape-robot", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        """A submission: stage at once what needs no recall."""
        self._wake.set()

    def _loop(self) -> None:
        next_full = 0.0
        while not self._stopping.is_set():
            wait = self.poll_seconds
            try:
                full = time.monotonic() >= next_full
                if full:
                    next_full = time.monotonic() + self.poll_seconds
                done = self._sweep(time.time(), full)
                if done.staged or done.timed_out:
                    self._on_staged()
                if done.staged or done.timed_out or done.evicted:
                    log.debug("tape: %d staged, %d timed out, %d evicted", done.staged, done.timed_out, done.evicted)
                if done.next_ready is not None:
                    wait = min(wait, max(self.MIN_INTERVAL, done.next_ready - time.time()))
            except Exception:  # the table is unchanged; the next sweep tries again
                log.exception("tape sweep failed")
            self._wake.wait(wait)
            self._wake.clear()
            self._stopping.wait(self.MIN_INTERVAL)
