"""Every metric aso exports, declared once: name, type, labels and help text.

The instrumentation builds its metrics from these declarations, and the dashboard test
checks that ``docs/grafana/aso-dashboard.json`` names nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    #: the family name (a counter's samples add ``_total``, a histogram's ``_bucket`` etc.)
    name: str
    kind: str  # "counter", "gauge" or "histogram"
    help: str
    labels: tuple[str, ...] = ()

    def samples(self) -> tuple[str, ...]:
        """The sample names a scrape shows for this family."""
        if self.kind == "counter":
            return (f"{self.name}_total",)
        if self.kind == "histogram":
            return tuple(f"{self.name}_{s}" for s in ("bucket", "sum", "count"))
        return (self.name,)


def _m(name: str, kind: str, help: str, *labels: str) -> Metric:
    return Metric(name, kind, help, labels)


# -- aso server (the state backend's REST API) ---------------------------------------------
SERVER_REQUESTS = _m("aso_server_http_requests", "counter",
                     "HTTP requests answered by aso server, by route (resource and subresource) and status code.",
                     "route", "code")
SERVER_LATENCY = _m("aso_server_http_request_duration_seconds", "histogram",
                    "Time aso server took to answer a request, by route.", "route")
SERVER_TRANSFERS = _m("aso_server_transfers", "gauge",
                      "Rows of the state backend by transfer state (computed at scrape time, cached).", "state")
SERVER_PUBLICATIONS = _m("aso_server_publications", "gauge",
                         "Rows of the state backend by publication state (computed at scrape time, cached).", "state")
SERVER_QUEUE = _m("aso_server_queue_depth", "gauge",
                  "Rows waiting or in flight (NEW, ACQUIRED, SUBMITTED) per link, source site to destination site.",
                  "source", "destination")

# -- aso fts-server (the embedded FTS3-compatible service) ---------------------------------
FTS_REQUESTS = _m("aso_fts_http_requests", "counter",
                  "HTTP requests answered by aso fts-server, by route (method and URL rule) and status code.",
                  "route", "code")
FTS_LATENCY = _m("aso_fts_http_request_duration_seconds", "histogram",
                 "Time aso fts-server took to answer a request, by route.", "route")
FTS_FILES = _m("aso_fts_files", "gauge",
               "Files of the FTS service by FTS3 file state (computed at scrape time, cached).", "state")
FTS_QUEUE = _m("aso_fts_queue_depth", "gauge",
               "Files queued (SUBMITTED) per link, source storage to destination storage.", "source_se", "dest_se")
FTS_BYTES = _m("aso_fts_copied_bytes", "counter",
               "Bytes copied by the FTS service since it started (a resumed copy counts the bytes after its checkpoint).")
FTS_FINISHED = _m("aso_fts_files_finished", "counter", "Copies that ended FINISHED since the service started.")
FTS_FAILED = _m("aso_fts_files_failed", "counter",
                "Copy attempts that failed since the service started (also those FTS retries).")
FTS_ACTIVE = _m("aso_fts_active_copies", "gauge", "Copies running now.")

# -- component passes (textfile collector, and --metrics-port in --loop mode) ---------------
PASS_DURATION = _m("aso_pass_duration_seconds", "gauge", "Duration of the component's last pass.", "component")
PASS_FILES = _m("aso_pass_files", "gauge", "Files the component's last pass handled.", "component")
PASS_FAILURES = _m("aso_pass_failures", "gauge",
                   "Errors of the component's last pass (work that waits for the next pass).", "component")
PASS_EXIT_CODE = _m("aso_pass_exit_code", "gauge",
                    "Exit code the component's last pass earned, as the command's (0 ok, 1 errors, 2 bad configuration, 3 a backend unreachable).",
                    "component")
PASS_LAST_SUCCESS = _m("aso_pass_last_success_timestamp_seconds", "gauge",
                       "Unix time the component's last pass with exit code 0 ended.", "component")
PASS_TOTAL = _m("aso_pass", "counter", "Passes the component ran (kept across cron runs in the textfile).", "component")

ALL: tuple[Metric, ...] = tuple(v for v in dict(globals()).values() if isinstance(v, Metric))
BY_NAME: dict[str, Metric] = {m.name: m for m in ALL}


def family_of(sample: str) -> Metric | None:
    """The declared family a sample name belongs to (``aso_pass_total`` → ``aso_pass``,
    ``..._seconds_bucket`` → the histogram), or None. A suffix is stripped only where the
    family's type produces it: ``aso_pass_files`` is a gauge, not ``aso_pass`` plus junk."""
    for metric in ALL:
        if sample in metric.samples():
            return metric
    return None
