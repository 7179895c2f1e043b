"""Gauges computed at scrape time from a store, cached so a scrape storm (several
Prometheus servers, a dashboard refreshing, gunicorn workers each scraped) costs the
database one set of grouped counts per cache period, not one per scrape."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from aso.metrics import names
from aso.metrics.names import Metric

log = logging.getLogger("aso.metrics")

#: seconds a computed set of store gauges is served again before the store is asked anew
DEFAULT_CACHE_SECONDS = 10.0


def gauge(metric: Metric, values: dict[tuple[str, ...], float] | float) -> GaugeMetricFamily:
    """A gauge family of ``metric`` with one sample per label tuple (or one plain value)."""
    if not isinstance(values, dict):
        return GaugeMetricFamily(metric.name, metric.help, value=values)
    family = GaugeMetricFamily(metric.name, metric.help, labels=list(metric.labels))
    for labels, value in sorted(values.items()):
        family.add_metric(list(labels), value)
    return family


def counter(metric: Metric, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(metric.name, metric.help, value=value)


class CachedCollector(Collector):
    """Serves what ``compute()`` returned for ``ttl`` seconds. A failing ``compute`` (the
    database away) is logged and its families are left out of the scrape: absent series
    are what an alert on ``absent()`` or ``up`` sees, and the other metrics still go out."""

    def __init__(self, compute: Callable[[], list[Any]], ttl: float = DEFAULT_CACHE_SECONDS):
        self._compute = compute
        self._ttl = ttl
        self._lock = threading.Lock()
        self._families: list[Any] = []
        self._at = float("-inf")

    def collect(self) -> Iterable[Any]:
        # one thread computes; concurrent scrapes wait for its answer instead of querying too
        with self._lock:
            if time.monotonic() - self._at >= self._ttl:
                try:
                    self._families = self._compute()
                    self._at = time.monotonic()
                except Exception as exc:
                    log.warning("metrics: the store gauges could not be computed: %s", exc)
                    return []
            return list(self._families)


def state_store_gauges(store) -> Callable[[], list[Any]]:
    """Rows by transfer state, by publication state and queued per link, of an
    :class:`aso.state.store.Store` (every state appears, 0 when no row has it, so a
    dashboard's series do not come and go)."""
    from aso.state.states import PublicationState, TransferState

    def compute() -> list[Any]:
        counts = store.state_counts()
        transfer = {(s.name,): 0 for s in TransferState}
        publication = {(s.name,): 0 for s in PublicationState}
        for (t, p), n in counts.items():
            transfer[(t,)] += n
            publication[(p,)] += n
        return [
            gauge(names.SERVER_TRANSFERS, transfer),
            gauge(names.SERVER_PUBLICATIONS, publication),
            gauge(names.SERVER_QUEUE, store.queue_depth()),
        ]

    return compute


#: FTS3's file states, all reported (0 when none), so the series are stable
FTS_FILE_STATES = ("STAGING", "SUBMITTED", "READY", "ACTIVE", "FINISHED", "FAILED", "CANCELED", "NOT_USED")


def fts_store_gauges(store) -> Callable[[], list[Any]]:
    """Files by state and queued per link of an :class:`aso.ftsd.db.JobStore`."""

    def compute() -> list[Any]:
        files = {(s,): 0 for s in FTS_FILE_STATES}
        for state, n in store.counts().items():
            files[(state,)] = n
        return [gauge(names.FTS_FILES, files), gauge(names.FTS_QUEUE, store.queue_depth())]

    return compute


class ExecutorCollector(Collector):
    """The copy counters and the running copies of an FTS executor, read at scrape time
    (in memory: no database work)."""

    def __init__(self, executor):
        self._executor = executor

    def collect(self) -> Iterable[Any]:
        nbytes, finished, failed = self._executor.totals.snapshot()
        return [
            counter(names.FTS_BYTES, nbytes),
            counter(names.FTS_FINISHED, finished),
            counter(names.FTS_FAILED, failed),
            gauge(names.FTS_ACTIVE, self._executor.running()),
        ]
