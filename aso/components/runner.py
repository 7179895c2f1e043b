"""Running a component pass the way cron does: under the component's lock, once or in a
loop, with a summary line per pass.

A second pass of the same component finds the lock held and returns at once (exit 0):
cron starting a pass while the previous one runs is normal, not an error.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aso.locking import LockHeld, component_lock
from aso.logs import set_pass

log = logging.getLogger("aso.runner")


@dataclass
class PassOutcome:
    #: None when the lock was held and nothing ran
    summary: Any | None
    lock_held: bool = False
    passes: int = 0
    #: why nothing ran (the lock's holder), when the lock was held
    message: str = ""
    #: the id of the last pass started (its records and log lines carry it)
    pass_id: str = ""


def run_passes(
    lock_dir: str,
    name: str,
    one_pass: Callable[[], Any],
    *,
    loop: bool = False,
    interval: float = 60.0,
    on_summary: Callable[[Any], None] | None = None,
    on_start: Callable[[str], None] | None = None,
    on_pass_end: Callable[[Any | None, float, BaseException | None], None] | None = None,
) -> PassOutcome:
    """Run ``one_pass`` under the ``name`` lock (once, or until SIGTERM/SIGINT with ``loop``).
    Returns the last pass's summary. ``on_pass_end(summary, seconds, exception)`` hears of
    every pass that ran, also one that raised (summary None; metrics, records)."""
    stop = threading.Event()
    previous = None
    if loop and threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    outcome = PassOutcome(None)
    # every line of a pass carries the component and the pass id, and so does its record
    pass_id = set_pass(name)
    try:
        with component_lock(lock_dir, name):
            while True:
                started = time.monotonic()
                outcome.pass_id = pass_id or ""
                if on_start:
                    on_start(outcome.pass_id)
                summary, failure = None, None
                try:
                    summary = one_pass()
                except Exception as exc:
                    failure = exc
                    raise
                finally:
                    if on_pass_end is not None:
                        on_pass_end(summary, time.monotonic() - started, failure)
                outcome.summary = summary
                outcome.passes += 1
                line = summary.line() if hasattr(summary, "line") else str(summary)
                log.info("%s (%.1f s)", line, time.monotonic() - started)
                if on_summary:
                    on_summary(summary)
                if not loop or stop.wait(interval):
                    break
                pass_id = set_pass(name)  # a new pass id for the next pass
    except LockHeld as exc:
        log.info("%s", exc)
        outcome.lock_held = True
        outcome.message = str(exc)
    except KeyboardInterrupt:
        pass
    finally:
        set_pass(None)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return outcome
