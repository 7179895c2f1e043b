"""Each pass of a component, recorded in the state backend for the operators' page.

A pass is recorded when it starts and again when it ends, best effort: the record is how an
operator sees that a component runs and how it went, never a reason for the pass itself to
fail, so a state backend that cannot take it costs one warning line and a short timeout.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from aso.errors import AsoError
from aso.state.records import Heartbeat, Membership, PassRecord

log = logging.getLogger("aso.passes")


def pass_counts(summary: Any) -> tuple[int, int]:
    """(files handled, errors met) of any component's pass summary."""
    from aso.metrics.passes import files_handled

    if summary is None:
        return 0, 0
    return files_handled(summary), len(getattr(summary, "errors", ()) or ())


class PassReporter:
    """Records the passes of one component instance (this host and process)."""

    def __init__(self, open_backend: Callable[[], Any], component: str, host: str | None = None):
        self._open = open_backend
        self._backend: Any = None
        self.component = component
        self.host = host or socket.gethostname()
        self.pid = os.getpid()
        self.pass_id = ""
        self.started_at = 0.0
        self._warned = False

    def started(self, pass_id: str) -> None:
        self.pass_id, self.started_at = pass_id, time.time()
        self._record(PassRecord(self.host, self.component, self.pid, pass_id, self.started_at))

    def ended(self, summary: Any, exit_code: int) -> None:
        if not self.pass_id:
            return
        files, failures = pass_counts(summary)
        line = summary.line() if hasattr(summary, "line") else ""
        self._record(PassRecord(self.host, self.component, self.pid, self.pass_id, self.started_at, time.time(),
                                exit_code, files, failures, line[:1000]))
        self.pass_id = ""

    def _record(self, record: PassRecord) -> None:
        try:
            if self._backend is None:
                self._backend = self._open()
            self._backend.record_pass(record)
        except (AsoError, OSError) as exc:
            # Only the first failure of a run is worth a warning: a looping component would
            # otherwise say the same every pass while the backend is away.
            (log.debug if self._warned else log.warning)("%s pass %s not recorded in the state backend: %s",
                                                         self.component, record.pass_id, exc)
            self._warned = True

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None


class Heartbeater:
    """The heartbeats of one component instance (this host and process), on the backend its
    passes use, so that the generation a heartbeat answers is the one their writes carry.

    Best effort, as pass records: a heartbeat that cannot be written costs a warning, and
    the backend then knows its share is unknown (:meth:`StateBackend.share` gives it nobody
    new). :meth:`during` refreshes the heartbeat every ``timeout / 4`` seconds of a long
    pass, so a busy instance is never taken for dead."""

    def __init__(self, backend: Any, component: str, timeout: int, host: str | None = None):
        self.backend = backend
        self.component = component
        self.timeout = int(timeout)
        self.host = host or socket.gethostname()
        self.pid = os.getpid()
        self.started = time.time()
        self._warned = False

    def beat(self) -> Membership | None:
        try:
            membership = self.backend.heartbeat(Heartbeat(self.host, self.component, self.pid, self.started,
                                                          self.timeout))
        except (AsoError, OSError) as exc:
            (log.debug if self._warned else log.warning)(
                "%s: heartbeat not recorded in the state backend (%s); no new users' work is taken this pass",
                self.component, exc)
            self._warned = True
            return None
        self._warned = False
        for taken in membership.taken_over:
            log.warning("worker %s silent for more than %d s: taken over by %s (%d row(s) of %d user(s) reassigned, "
                        "its generation is now %d)", taken.worker, self.timeout, taken.by, taken.rows, taken.users,
                        taken.generation)
        return membership

    @contextmanager
    def during(self) -> Iterator[None]:
        """Heartbeat again every timeout/4 until the block ends."""
        stop = threading.Event()

        def refresh() -> None:
            while not stop.wait(self.timeout / 4):
                self.beat()

        thread = threading.Thread(target=refresh, name=f"{self.component}-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def reporter_for(config: Any, component: str) -> PassReporter:
    """A reporter on the configuration's state backend, with a short timeout and no retries:
    a pass must not wait on its own bookkeeping."""
    from aso.state import open_backend

    def open_() -> Any:
        return open_backend(config.state.url, worker=config.aso.worker, token=config.state.token,
                            instance=config.aso.instance, timeout=min(5.0, config.state.timeout), retries=1,
                            backoff=0.1, ca_bundle=config.state.ca_bundle)

    return PassReporter(open_, component)
