"""Log lines that can be followed: real passes of the ``aso`` command (transfer, monitor,
reporter) against a real HTTPS ``aso fts-server``, both logging JSON; every line parsed and
its fields checked, and one FTS job followed through the three components' logs."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from aso.logs import ContextFilter, JsonFormatter, TextFormatter, log_context, pass_context
from tests.pipeline.harness import Installation, all_in
from tests.pki import HttpsFtsServer
from tests.procs import Service, aso_command, free_port

REQUIRED = ("ts", "level", "logger", "message", "component", "pass_id")


@pytest.fixture(scope="module")
def fts_json(pki, tmp_path_factory):
    """An HTTPS aso fts-server logging JSON (the global option goes before the command)."""
    folder = tmp_path_factory.mktemp("logs-fts")
    port = free_port()
    db, log = folder / "fts.db", folder / "fts-server.log"
    args = aso_command("--log-format", "json", "fts-server", "--host", "127.0.0.1", "--port", str(port),
                       "--db", str(db), "--cert", str(pki.host_cert_path), "--key", str(pki.host_key_path),
                       "--ca-dir", str(pki.ca_dir), "--root", str(tmp_path_factory.getbasetemp()))
    with Service(args, port, log, cwd=str(folder)) as service:
        yield HttpsFtsServer(service, f"https://localhost:{port}", pki.ca_dir, db, log)


def json_lines(text: str, what: str) -> list[dict]:
    """Every line of ``text`` as a JSON object (a line that is not one fails the test)."""
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"{what}: not a JSON line: {line!r}")
    return out


def test_json_lines_of_real_passes_follow_one_fts_job(pki, fts_json, tmp_path):
    inst = Installation(tmp_path / "aso", fts_json.url, f'fts.ca_dir="{fts_json.ca_dir}"', "transfer.max_files_per_job=50")
    users = []
    for name in ("logalice", "logbob"):
        inst.add_proxy(name, pki.add_user(name).proxy_path)
        users.append(name)
    inst.inject(inst.make_requests(users, 6))

    runs: list[tuple[str, list[dict], str]] = []  # (component, its lines, raw stderr)

    def run(component: str) -> None:
        res = inst.aso("--log-format", "json", component)
        runs.append((component, json_lines(res.stderr, f"aso {component}"), res.stderr))

    for _ in range(40):
        for component in ("transfer", "monitor", "reporter"):
            run(component)
        if all_in("DONE")(inst.rows()):
            break
        time.sleep(0.2)
    assert all_in("DONE")(inst.rows()), sorted({r["tm_transfer_state"] for r in inst.rows()})

    pass_ids = []
    for component, lines, _ in runs:
        assert lines, f"aso {component} logged nothing (its summary line at least)"
        for line in lines:
            missing = [k for k in REQUIRED if not line.get(k)]
            assert not missing, f"aso {component}: {missing} missing in {line}"
            assert line["component"] == component, line
            assert line["ts"].endswith("Z") and "T" in line["ts"], line["ts"]
        ids = {line["pass_id"] for line in lines}
        assert len(ids) == 1, f"one pass, one pass id: {ids}"
        pass_ids.append(ids.pop())
    assert len(set(pass_ids)) == len(pass_ids), "every pass has its own id"

    # per-user and per-job lines carry the user and the job as fields
    submitted = [line for c, lines, _ in runs if c == "transfer" for line in lines if "submitted to" in line["message"]]
    assert len(submitted) == 2 * 3, submitted  # 2 users, 3 links each
    for line in submitted:
        assert line["user"] in users and line["fts_job"] in line["message"] and line["user"] in line["message"], line
        assert line["task"] == f"221122_000000:{line['user']}_task", line
    for component, lines, _ in runs:
        for line in lines:
            if "FTS job " in line["message"]:
                assert line.get("fts_job") and line["fts_job"] in line["message"], (component, line)
                assert line.get("user") and line["user"] in line["message"], (component, line)

    # one grep per component log follows a job from submission to its recorded states
    job = submitted[0]["fts_job"]
    for component in ("transfer", "monitor", "reporter"):
        log_text = "".join(raw for c, _, raw in runs if c == component)
        hits = [line for line in log_text.splitlines() if job in line]
        assert hits, f"FTS job {job} not in the {component} log"
        assert all(json.loads(h)["fts_job"] == job for h in hits), hits

    # the FTS service logs JSON too: a request line per request, the submission with its job
    service_lines = json_lines(fts_json.log.read_text(), "aso fts-server")
    assert all(line["component"] == "fts-server" and "pass_id" not in line for line in service_lines)
    requests = [line for line in service_lines if line["logger"] == "aso.fts.requests"]
    assert requests, "no request lines"
    for line in requests:
        assert {"method", "path", "status", "duration_ms"} <= line.keys(), line
    posts = [line for line in requests if line["method"] == "POST" and line["path"] == "/jobs"]
    assert posts and all(line["status"] == 200 and "CN=" in line["identity"] for line in posts), posts
    assert any(line.get("fts_job") == job for line in service_lines if "submitted by" in line["message"])
    assert any(line.get("fts_job") == job for line in service_lines if "copied" in line["message"])


def test_text_lines_carry_the_context_trailer(pki, fts_json, tmp_path):
    inst = Installation(tmp_path / "aso", fts_json.url, f'fts.ca_dir="{fts_json.ca_dir}"')
    inst.add_proxy("logcarol", pki.add_user("logcarol").proxy_path)
    inst.inject(inst.make_requests(["logcarol"], 2, links=(("T2_XX_Source", "T2_YY_Dest"),)))
    res = inst.aso("transfer")
    lines = res.stderr.splitlines()
    assert lines and all("[component=transfer pass=" in line for line in lines), res.stderr
    submitted = [line for line in lines if "submitted to" in line]
    assert len(submitted) == 1 and " user=logcarol " in submitted[0] and " job=" in submitted[0], submitted


def test_log_format_from_the_configuration(tmp_path):
    inst = Installation(tmp_path / "aso", "https://localhost:1", 'aso.log_format="json"')
    res = inst.aso("reporter")
    (line,) = json_lines(res.stderr, "aso reporter")
    assert line["component"] == "reporter" and line["message"].startswith("reporter: "), line
    # the option wins over the configuration
    res = inst.aso("--log-format", "text", "reporter")
    assert not res.stderr.startswith("{") and "[component=reporter pass=" in res.stderr, res.stderr


def test_a_new_pass_id_per_pass_of_a_loop(tmp_path):
    inst = Installation(tmp_path / "aso", "https://localhost:1")
    proc = subprocess.Popen(aso_command("--config", str(inst.config_path), "--log-format", "json", "reporter",
                                        "--loop", "--interval", "0.1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=inst.root)
    try:
        time.sleep(3)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    summaries = [line for line in json_lines(stderr, "aso reporter --loop") if line["message"].startswith("reporter: ")]
    assert len(summaries) >= 2, stderr
    assert len({line["pass_id"] for line in summaries}) == len(summaries), summaries


def test_bad_log_format_is_one_error_line_exit_2(tmp_path):
    res = subprocess.run(aso_command("--log-format", "yaml", "status"), capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 2, res
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--log-format" in lines[0], res.stderr
    config = tmp_path / "aso.toml"
    config.write_text('[aso]\nlog_format = "yaml"\n')
    res = subprocess.run(aso_command("--config", str(config), "status"), capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "aso.log_format" in res.stderr, res.stderr


# -- the pieces, in process ---------------------------------------------------------------


def _record(logger: logging.Logger, message: str, *args, **kwargs) -> logging.LogRecord:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(ContextFilter())
    logger.addHandler(handler)
    try:
        logger.error(message, *args, **kwargs)
    finally:
        logger.removeHandler(handler)
    return records[0]


def test_context_in_pool_threads_and_exceptions():
    logger = logging.getLogger("aso.test.logs")
    logger.propagate = False

    def per_user(user: str) -> logging.LogRecord:
        # a pool thread starts with an empty context: the per-user function sets its own
        with log_context(user=user), log_context(fts_job=f"job-{user}"):
            return _record(logger, "user %s: something", user)

    with pass_context("transfer") as pass_id, log_context(task="outer"):
        with ThreadPoolExecutor(2) as pool:
            records = list(pool.map(per_user, ["a", "b"]))
        try:
            raise ValueError("boom")
        except ValueError:
            failed = _record(logger, "failed", exc_info=True, extra={"user": "explicit"})
    for user, record in zip(["a", "b"], records, strict=True):
        data = json.loads(JsonFormatter().format(record))
        assert data["user"] == user and data["fts_job"] == f"job-{user}" and data["pass_id"] == pass_id
        assert data["component"] == "transfer" and "task" not in data  # the outer thread's task stays there
        assert TextFormatter().format(record).endswith(f"[component=transfer pass={pass_id} user={user} job=job-{user}]")
    data = json.loads(JsonFormatter().format(failed))
    assert data["user"] == "explicit" and data["task"] == "outer" and "ValueError: boom" in data["exception"]
    text = TextFormatter().format(failed)
    assert text.splitlines()[0].endswith("user=explicit task=outer]") and "Traceback" in text
    assert "component" not in json.loads(JsonFormatter().format(_record(logger, "after the pass")))


def test_gunicorn_entry_point_logs_through_the_same_setup(tmp_path):
    """``aso.state.server:app_from_env()`` (gunicorn's entry point) configures aso's logging
    from [aso]: the request lines of the state server reach stderr as JSON."""
    config = tmp_path / "aso.toml"
    config.write_text('[aso]\nlog_format = "json"\n[server]\ndb_url = "sqlite:///%s"\n'
                      'tokens = [{token = "svc-t0ken-123", identity = "svc", role = "service"}]\n' % (tmp_path / "state.db"))
    code = ("from aso.state.server import app_from_env\n"
            "app = app_from_env()\n"
            "c = app.test_client()\n"
            "c.get('/healthz')\n"
            "c.get('/crabserver/prod/filetransfers', headers={'Authorization': 'Bearer svc-t0ken-123'})\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "ASO_CONFIG": str(config), "PYTHONPATH": str(Path(__file__).parents[1])})
    assert res.returncode == 0, res.stderr
    lines = [line for line in json_lines(res.stderr, "state server") if line["logger"] == "aso.server.requests"]
    # /healthz is polled every few seconds: its line is DEBUG, below the default INFO
    assert [(line["method"], line["path"]) for line in lines] == [("GET", "/crabserver/prod/filetransfers")], lines
    assert lines[0]["identity"] == "svc" and lines[0]["component"] == "server", lines
