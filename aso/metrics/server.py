"""``/metrics`` for a Flask app (``aso server``, ``aso fts-server``): requests by route and
status code, latency by route, and whatever gauges the app adds (computed at scrape time).

Each app has its own :class:`CollectorRegistry`, so several apps in one process (tests, the
demo) keep their counts apart. Under gunicorn, each worker process counts its own requests;
with ``PROMETHEUS_MULTIPROC_DIR`` set (before the process starts: prometheus_client reads it
when it is first imported) the counters live in files there and any worker's ``/metrics``
sums every worker's (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Iterable

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.registry import Collector

from aso.metrics.names import Metric

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
METRICS_PATH = "/metrics"
#: the route label of a request no URL rule matched (its raw path would be unbounded)
UNMATCHED = "unmatched"


def multiprocess_dir() -> str | None:
    """The multiprocess folder when prometheus_client runs in multiprocess mode."""
    return os.environ.get(MULTIPROC_ENV) or None


def route_label() -> str:
    """A bounded name for the current request: what the app set in ``g.metrics_route``
    (the state server: resource and subresource), else the method and the URL rule
    (``GET /jobs/<job_list>``), never the raw path."""
    named = g.get("metrics_route")
    if named:
        return named
    rule = request.url_rule
    return f"{request.method} {rule.rule}" if rule is not None else UNMATCHED


def token_allows(token: str, authorization: str | None) -> bool:
    """Whether a request may read /metrics: always with no token configured, else only with
    ``Authorization: Bearer <token>`` (compared in constant time)."""
    if not token:
        return True
    return hmac.compare_digest((authorization or "").encode(), f"Bearer {token}".encode())


def instrument(
    app: Flask,
    *,
    requests_metric: Metric,
    latency_metric: Metric,
    collectors: Iterable[Collector] = (),
    token: str = "",
) -> CollectorRegistry:
    """Count and time every request of ``app`` and serve ``/metrics`` (open, or behind a
    bearer ``token``). Returns the app's registry."""
    registry = CollectorRegistry()
    collectors = list(collectors)
    for collector in collectors:
        registry.register(collector)
    counted = Counter(requests_metric.name, requests_metric.help, list(requests_metric.labels), registry=registry)
    timed = Histogram(latency_metric.name, latency_metric.help, list(latency_metric.labels), registry=registry)

    def started() -> None:
        g.metrics_started = time.perf_counter()

    # first of the before_request functions: a request refused by authentication is timed too
    app.before_request_funcs.setdefault(None, []).insert(0, started)

    @app.after_request
    def observe(response: Response) -> Response:
        route = route_label()
        counted.labels(route, str(response.status_code)).inc()
        timed.labels(route).observe(time.perf_counter() - g.get("metrics_started", time.perf_counter()))
        return response

    def metrics() -> Response:
        if not token_allows(token, request.headers.get("Authorization")):
            return Response("a valid bearer token is required (Authorization: Bearer <metrics_token>)\n",
                            status=401, mimetype="text/plain", headers={"WWW-Authenticate": "Bearer"})
        return Response(generate_latest(scrape_registry(registry, collectors)), mimetype=CONTENT_TYPE_LATEST)

    app.add_url_rule(METRICS_PATH, "metrics", metrics, methods=["GET"])
    return registry


def scrape_registry(registry: CollectorRegistry, collectors: list[Collector]) -> CollectorRegistry:
    """What a scrape reads: the app's registry, or in multiprocess mode every process's
    counters from the multiprocess folder plus this process's scrape-time gauges."""
    folder = multiprocess_dir()
    if folder is None:
        return registry
    from prometheus_client import multiprocess

    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged, path=folder)
    for collector in collectors:
        merged.register(collector)
    return merged


def is_metrics_request() -> bool:
    """Whether the current request is a scrape (it authenticates by its own token)."""
    return request.path == METRICS_PATH


__all__ = ["instrument", "is_metrics_request", "multiprocess_dir", "route_label", "token_allows"]
