"""Prometheus metrics of the real services: ``aso server`` and ``aso fts-server`` scraped over
loopback, component passes run through the CLI, and the Grafana dashboard checked against
what they export."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from aso.metrics import names
from aso.state import TransferUpdate, open_backend
from tests.ftsd.fts import PlainFts, transfer
from tests.procs import Service, aso_command, free_port
from tests.state.servers import write_server_config
from tests.state.test_contract import request

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docs" / "grafana" / "aso-dashboard.json"
METRICS_TOKEN = "scrape-secret"


def parse(text: str) -> dict[str, list]:
    """Samples by sample name."""
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def scrape(url: str, token: str | None = None) -> dict[str, list]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = requests.get(f"{url}/metrics", headers=headers, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("text/plain")
    return parse(resp.text)


def value(samples: dict[str, list], name: str, **labels: str) -> float:
    matching = [s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matching) == 1, f"{name}{labels}: {matching} in {sorted(samples)}"
    return matching[0]


def start_server(tmp_path: Path, extra: str = "", env: dict | None = None) -> tuple[Service, str]:
    # cache_seconds = 0: each scrape counts afresh, so the test sees what it just changed
    config = write_server_config(tmp_path, extra=extra + "\n[metrics]\ncache_seconds = 0.0")
    port = free_port()
    service = Service(aso_command("--config", str(config), "server", "--host", "127.0.0.1", "--port", str(port)),
                      port, tmp_path / "server.log", env=env).start()
    return service, f"http://127.0.0.1:{port}"


# -- aso server -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def state_server(tmp_path_factory):
    service, url = start_server(tmp_path_factory.mktemp("state"))
    yield url
    service.stop()


def test_state_server_counts_rows_requests_and_latency(state_server):
    backend = open_backend(state_server, worker="w1", token="service-token", instance="test", retries=1)
    task = f"t{time.time_ns()}"
    backend.inject([request(i, "alice", task, publish=1 if i < 2 else 0) for i in range(5)])
    backend.inject([{**request(9, "bob", task + "b"), "destination": "T2_ZZ_Other",
                     "source_lfn": f"/store/temp/user/bob/{task}b/x.root"}])
    assert backend.acquire_transfers(["alice"], 2) == 2
    acquired = backend.acquired_transfers("alice")
    backend.update_transfers([TransferUpdate(acquired[0]["tm_id"], "SUBMITTED", fts_id="j1")])
    for _ in range(3):
        assert requests.get(f"{state_server}/healthz", timeout=5).status_code == 200
    assert requests.get(f"{state_server}/crabserver/test/filetransfers", timeout=5).status_code == 401

    samples = scrape(state_server)

    by_state: dict[str, int] = {}
    by_publication: dict[str, int] = {}
    for row in backend.statistics():
        by_state[row["transfer_state"]] = by_state.get(row["transfer_state"], 0) + row["count"]
        by_publication[row["publication_state"]] = by_publication.get(row["publication_state"], 0) + row["count"]
    assert by_state == {"NEW": 4, "ACQUIRED": 1, "SUBMITTED": 1}
    for state in ("NEW", "ACQUIRED", "SUBMITTED", "DONE", "FAILED", "KILLED"):
        assert value(samples, "aso_server_transfers", state=state) == by_state.get(state, 0)
    for state, n in by_publication.items():
        assert value(samples, "aso_server_publications", state=state) == n
    assert value(samples, "aso_server_queue_depth", source="T2_XX_Source", destination="T2_YY_Dest") == 5
    assert value(samples, "aso_server_queue_depth", source="T2_XX_Source", destination="T2_ZZ_Other") == 1

    requests_total = "aso_server_http_requests_total"
    assert value(samples, requests_total, route="GET /healthz", code="200") == 3
    assert value(samples, "aso_server_http_request_duration_seconds_count", route="GET /healthz") == 3
    assert value(samples, requests_total, route="GET /crabserver/<inst>/<resource>", code="401") == 1
    assert value(samples, requests_total, route="PUT fileusertransfers", code="200") == 2
    assert value(samples, requests_total, route="POST filetransfers/acquireTransfers", code="200") == 1
    # bounded labels: a method and a resource/subresource or URL rule, never a raw path or id
    for sample in samples[requests_total]:
        assert re.fullmatch(r"[A-Z]+ [A-Za-z/<>_]+|unmatched", sample.labels["route"]), sample.labels
    backend.close()


def test_metrics_token_and_multiprocess_mode(tmp_path):
    folder = tmp_path / "prom-multiproc"
    folder.mkdir()
    service, url = start_server(tmp_path, extra=f'metrics_token = "{METRICS_TOKEN}"',
                                env={"PROMETHEUS_MULTIPROC_DIR": str(folder)})
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer service-token"},
                        {"Authorization": METRICS_TOKEN}):
            assert requests.get(f"{url}/metrics", headers=headers, timeout=5).status_code == 401
        # the metrics token opens /metrics only, not the API
        assert requests.get(f"{url}/crabserver/test/filetransfers", timeout=5,
                            headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).status_code == 401
        requests.get(f"{url}/healthz", timeout=5)
        samples = scrape(url, METRICS_TOKEN)
        # the counters come from the multiprocess files (what gunicorn's workers share)
        assert any(folder.glob("*.db"))
        assert value(samples, "aso_server_http_requests_total", route="GET /healthz", code="200") == 1
        assert value(samples, "aso_server_http_requests_total", route="GET /metrics", code="401") == 4
        assert value(samples, "aso_server_transfers", state="NEW") == 0
    finally:
        service.stop()


# -- aso fts-server ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fts")
    config = tmp / "fts.toml"
    config.write_text(f'[fts_server]\nmetrics_token = "{METRICS_TOKEN}"\n[metrics]\ncache_seconds = 0.0\n')
    server = PlainFts(tmp / "fts")
    # the same command with --config in front: the metrics token comes from [fts_server]
    server.args = aso_command("--config", str(config), *server.args[len(aso_command()):])
    server.start()
    try:
        yield server, *fts_work(server, tmp)
    finally:
        server.stop()


def fts_work(server: PlainFts, tmp: Path) -> tuple[int, dict]:
    """One copy that finishes, one that fails, one queued for a retry: (bytes, queued file)."""
    assert requests.get(f"{server.url}/metrics", timeout=5).status_code == 401
    data = os.urandom(300_000)
    (tmp / "src.bin").write_bytes(data)
    job_id = server.submit([transfer((tmp / "src.bin").as_uri(), (tmp / "out" / "dst.bin").as_uri())])
    assert server.wait(job_id)["job_state"] == "FINISHED"
    failed = server.submit([transfer((tmp / "missing.bin").as_uri(), (tmp / "out" / "never.bin").as_uri())])
    assert server.wait(failed)["job_state"] == "FAILED"
    # a source nobody serves, retried in an hour: one failed attempt, then queued
    waiting = server.submit([transfer(f"http://127.0.0.1:{free_port()}/x", (tmp / "out" / "later.bin").as_uri())],
                            retry=1, retry_delay=3600)
    queued = server.wait_files(waiting, lambda fs: fs[0]["file_state"] == "SUBMITTED" and fs[0]["retry"] >= 1)[0]
    return len(data), queued


def test_fts_server_counts_copies_bytes_and_files(fts):
    server, size, queued = fts
    samples = scrape(server.url, METRICS_TOKEN)

    assert value(samples, "aso_fts_copied_bytes_total") >= size
    assert value(samples, "aso_fts_files_finished_total") == 1
    assert value(samples, "aso_fts_files_failed_total") == 2
    assert value(samples, "aso_fts_files", state="FINISHED") == 1
    assert value(samples, "aso_fts_files", state="FAILED") == 1
    assert value(samples, "aso_fts_files", state="SUBMITTED") == 1
    assert value(samples, "aso_fts_queue_depth", source_se=queued["source_se"], dest_se=queued["dest_se"]) == 1
    assert value(samples, "aso_fts_active_copies") == 0
    assert value(samples, "aso_fts_http_requests_total", route="POST /jobs", code="200") == 3
    assert value(samples, "aso_fts_http_request_duration_seconds_count", route="POST /jobs") == 3
    assert value(samples, "aso_fts_http_requests_total", route="GET /metrics", code="401") == 1
    assert value(samples, "aso_fts_http_requests_total", route="GET /jobs/<job_list>", code="200") >= 2


def test_fts_server_metrics_over_https_need_no_client_certificate(tmp_path, pki):
    """Prometheus scrapes with no grid certificate: over HTTPS the service asks for one but
    /metrics answers without it; the FTS API still refuses such a caller."""
    from tests.pki import fts_server_https

    (tmp_path / "fts").mkdir()
    with fts_server_https(pki, tmp_path / "fts") as srv:
        answer = requests.get(f"{srv.url}/metrics", verify=str(pki.ca_dir), timeout=10)
        assert answer.status_code == 200, answer.text[:300]
        assert "aso_fts_active_copies" in answer.text
        assert requests.get(f"{srv.url}/whoami", verify=str(pki.ca_dir), timeout=10).status_code in (401, 403)


# -- component passes ---------------------------------------------------------------------------

def run_pass(config: Path, component: str) -> subprocess.CompletedProcess:
    return subprocess.run(aso_command("--config", str(config), component), capture_output=True, text=True,
                          timeout=60, cwd=config.parent)


@pytest.fixture(scope="module")
def textfiles(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("passes")
    (tmp / "aso.toml").write_text('[metrics]\ntextfile_dir = "prom"\n')
    # a state server nobody listens on: the transfer pass fails with exit code 3
    (tmp / "down.toml").write_text(f'[metrics]\ntextfile_dir = "prom"\n[state]\nurl = "http://127.0.0.1:{free_port()}"\n'
                                   'retries = 1\ntimeout = 2.0\n')
    return tmp


def read_prom(path: Path) -> dict[str, list]:
    assert not list(path.parent.glob("*.prom.*")), "a temporary file was left behind"
    return parse(path.read_text())


def test_a_pass_writes_its_textfile_and_keeps_the_last_success(textfiles):
    config = textfiles / "aso.toml"
    before = time.time()
    assert run_pass(config, "reporter").returncode == 0
    first = read_prom(textfiles / "prom" / "aso_reporter.prom")
    assert value(first, "aso_pass_exit_code", component="reporter") == 0
    assert value(first, "aso_pass_total", component="reporter") == 1
    assert value(first, "aso_pass_files", component="reporter") == 0
    assert value(first, "aso_pass_failures", component="reporter") == 0
    assert 0 <= value(first, "aso_pass_duration_seconds", component="reporter") < 30
    success = value(first, "aso_pass_last_success_timestamp_seconds", component="reporter")
    assert before <= success <= time.time()

    # the transfer pass cannot reach the state server: exit code 3, and the last success
    # a previous good pass recorded stays
    assert run_pass(config, "transfer").returncode == 0
    good = value(read_prom(textfiles / "prom" / "aso_transfer.prom"), "aso_pass_last_success_timestamp_seconds",
                 component="transfer")
    done = run_pass(textfiles / "down.toml", "transfer")
    assert done.returncode == 3, done.stderr
    failed = read_prom(textfiles / "prom" / "aso_transfer.prom")
    assert value(failed, "aso_pass_exit_code", component="transfer") == 3
    assert value(failed, "aso_pass_failures", component="transfer") >= 1
    assert value(failed, "aso_pass_total", component="transfer") == 2
    assert value(failed, "aso_pass_last_success_timestamp_seconds", component="transfer") == good


def test_the_receiver_writes_its_textfile_when_it_stops(tmp_path):
    from tests.brokers import rabbitmq, require

    broker = require(rabbitmq())
    (tmp_path / "aso.toml").write_text(
        f'[metrics]\ntextfile_dir = "prom"\n[receiver]\nbrokers = ["{broker.address}"]\n'
        f'user = "{broker.user}"\npassword = "{broker.password}"\n')
    done = subprocess.run(aso_command("--config", str(tmp_path / "aso.toml"), "receiver", "--seconds", "1"),
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    prom = read_prom(tmp_path / "prom" / "aso_receiver.prom")
    assert value(prom, "aso_pass_exit_code", component="receiver") == 0
    assert value(prom, "aso_pass_total", component="receiver") == 1
    assert 1 <= value(prom, "aso_pass_duration_seconds", component="receiver") < 30


def test_a_looping_component_serves_its_pass_metrics_on_loopback(textfiles):
    port = free_port()
    service = Service(aso_command("--config", str(textfiles / "aso.toml"), "retry-manager", "--loop",
                                  "--interval", "0.2", "--metrics-port", str(port)),
                      port, textfiles / "loop.log", cwd=str(textfiles)).start()
    try:
        deadline = time.monotonic() + 10
        while True:
            samples = scrape(f"http://127.0.0.1:{port}")
            passes = samples.get("aso_pass_total", [])
            if passes and passes[0].value >= 2:
                break
            assert time.monotonic() < deadline, samples
            time.sleep(0.1)
        assert value(samples, "aso_pass_exit_code", component="retry-manager") == 0
    finally:
        service.stop()
    assert (textfiles / "prom" / "aso_retry_manager.prom").exists()


# -- the dashboard --------------------------------------------------------------------------------

def _exprs(node) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "expr" and isinstance(v, str)] + \
            [e for k, v in node.items() if k != "expr" for e in _exprs(v)]
    if isinstance(node, list):
        return [e for v in node for e in _exprs(v)]
    return []


def test_the_dashboard_uses_only_declared_and_exported_metrics(state_server, fts, textfiles):
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["panels"] and dashboard["title"] and "schemaVersion" in dashboard
    exprs = _exprs(dashboard)
    assert len(exprs) >= 8
    used = {m for e in exprs for m in re.findall(r"\baso_[a-z0-9_]+", e)}
    families = {}
    for sample in used:
        family = names.family_of(sample)
        assert family is not None, f"{sample} is not declared in aso/metrics/names.py"
        families[sample] = family
    # what the services export: a scrape of each, and a pass's textfile
    if not (textfiles / "prom" / "aso_reporter.prom").exists():
        run_pass(textfiles / "aso.toml", "reporter")
    # (a family with no sample yet, as the queue of an idle service, still has its HELP and TYPE)
    texts = [requests.get(f"{state_server}/metrics", timeout=10).text,
             requests.get(f"{fts[0].url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10).text,
             (textfiles / "prom" / "aso_reporter.prom").read_text()]
    exported = {f.name for text in texts for f in text_string_to_metric_families(text)}
    for sample, family in families.items():
        assert family.name in exported, f"the dashboard's {sample} is in no scrape"
    # and every panel kind asked for is there
    for name in ("aso_server_transfers", "aso_server_queue_depth", "aso_server_http_requests",
                 "aso_server_http_request_duration_seconds", "aso_fts_copied_bytes", "aso_fts_files_finished",
                 "aso_fts_active_copies", "aso_pass_duration_seconds", "aso_pass_last_success_timestamp_seconds"):
        assert names.BY_NAME[name] in families.values(), name


def test_suffixes_are_stripped_only_where_the_type_makes_them():
    assert names.family_of("aso_pass_total") is names.PASS_TOTAL
    assert names.family_of("aso_pass_files") is names.PASS_FILES
    assert names.family_of("aso_fts_http_request_duration_seconds_bucket") is names.FTS_LATENCY
    assert names.family_of("aso_server_transfers_total") is None  # a gauge has no _total
    assert names.family_of("aso_fts_copied_bytes") is None  # a counter's samples end in _total
    assert len({m.name for m in names.ALL}) == len(names.ALL)
