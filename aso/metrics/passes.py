"""The metrics of a component's passes: written after every pass to a node-exporter
textfile collector file (``[metrics] textfile_dir``/aso_<component>.prom) and, for a
component run with ``--loop``, served on 127.0.0.1 (``--metrics-port``).

A cron pass is a new process each time, so what must outlive it (the time of the last
successful pass, the number of passes) is read back from the file the previous pass wrote.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from aso.metrics import names

log = logging.getLogger("aso.metrics")

#: where the metrics of a looping component are served (never beyond this machine: a node
#: exporter or a local Prometheus agent scrapes it; nothing in them needs a wider audience)
LOOPBACK = "127.0.0.1"


def files_handled(summary: Any) -> int:
    """Files a pass handled, from its summary (each component counts its own kind of work);
    0 for a summary that names none."""
    counted = getattr(summary, "files_handled", None)
    return int(counted()) if callable(counted) else 0


def textfile_path(folder: str | Path, component: str) -> Path:
    """``aso_<component>.prom`` (``retry-manager`` → ``aso_retry_manager.prom``)."""
    return Path(folder) / f"aso_{component.replace('-', '_')}.prom"


class PassMetrics(Collector):
    """The last pass of one component, as Prometheus families."""

    def __init__(self, component: str, textfile_dir: str | Path = ""):
        self.component = component
        self.path = textfile_path(textfile_dir, component) if textfile_dir else None
        self._lock = threading.Lock()
        self.duration: float | None = None
        self.files = 0
        self.failures = 0
        self.exit_code: int | None = None
        self.last_success: float | None = None
        self.total = 0
        self._warned = False
        if self.path is not None:
            self._read_back(self.path)
        self._registry = CollectorRegistry()
        self._registry.register(self)

    def _read_back(self, path: Path) -> None:
        """What the previous pass's file says of the last success and the pass count (a
        missing or unreadable file starts them afresh)."""
        try:
            text = path.read_text()
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.labels.get("component") != self.component:
                        continue
                    if sample.name == names.PASS_LAST_SUCCESS.name:
                        self.last_success = float(sample.value)
                    elif sample.name == names.PASS_TOTAL.samples()[0]:
                        self.total = int(sample.value)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("metrics: %s unreadable (%s); pass count and last success start afresh", path, exc)

    def record(self, duration: float, files: int, failures: int, exit_code: int) -> None:
        """One pass ended: remember it and rewrite the textfile (atomically: a temporary file
        renamed into place, so the node exporter never reads half of one)."""
        with self._lock:
            self.duration, self.files, self.failures, self.exit_code = duration, files, failures, exit_code
            self.total += 1
            if exit_code == 0:
                self.last_success = time.time()
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_to_textfile(str(self.path), self._registry)
        except OSError as exc:  # metrics must never fail the pass that did the work
            # once per run: a looping component would say the same every pass
            (log.debug if self._warned else log.warning)("metrics: cannot write %s: %s", self.path, exc)
            self._warned = True

    def serve(self, port: int) -> None:
        """Serve these metrics on 127.0.0.1:``port`` (a daemon thread; for --loop)."""
        start_http_server(port, addr=LOOPBACK, registry=self._registry)
        log.info("pass metrics of %s on http://%s:%d/metrics", self.component, LOOPBACK, port)

    def collect(self) -> Iterable[Any]:
        with self._lock:
            values = [
                (names.PASS_DURATION, self.duration),
                (names.PASS_FILES, self.files if self.exit_code is not None else None),
                (names.PASS_FAILURES, self.failures if self.exit_code is not None else None),
                (names.PASS_EXIT_CODE, self.exit_code),
                (names.PASS_LAST_SUCCESS, self.last_success),
            ]
            total = self.total
        for metric, value in values:
            if value is None:
                continue  # nothing known yet: no sample rather than a made-up one
            family = GaugeMetricFamily(metric.name, metric.help, labels=["component"])
            family.add_metric([self.component], value)
            yield family
        family = CounterMetricFamily(names.PASS_TOTAL.name, names.PASS_TOTAL.help, labels=["component"])
        family.add_metric([self.component], total)
        yield family
