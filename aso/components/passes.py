"""Each pass of a component, recorded in the state backend for the operators' page.

A pass is recorded when it starts and again when it ends, best effort: the record is how an
operator sees that a component runs and how it went, never a reason for the pass itself to
fail, so a state backend that cannot take it costs one warning line and a short timeout.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from aso.errors import AsoError
from aso.state.records import PassRecord

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


def reporter_for(config: Any, component: str) -> PassReporter:
    """A reporter on the configuration's state backend, with a short timeout and no retries:
    a pass must not wait on its own bookkeeping."""
    from aso.state import open_backend

    def open_() -> Any:
        return open_backend(config.state.url, worker=config.aso.worker, token=config.state.token,
                            instance=config.aso.instance, timeout=min(5.0, config.state.timeout), retries=1,
                            backoff=0.1, ca_bundle=config.state.ca_bundle)

    return PassReporter(open_, component)
