"""Regressions: kills of pending submissions, kills of copies FTS had finished, bad sandbox
entries, an unwritable sandbox, exit codes with a backend down, ``max_retry: 0``. Real
``aso fts-server`` and ``aso server`` processes; components run as cron runs them."""

from __future__ import annotations

import json
import time
from pathlib import Path

from aso.config import load_config
from aso.sandbox import Sandbox
from aso.transfertools import JobOptions, Transfer, open_transfer_tool
from tests.ftsd.fts import PlainFts
from tests.ftsd.storage import http_storage
from tests.pipeline.conftest import installation, users_for
from tests.pipeline.harness import LINKS, Installation, all_in, fts_jobs_by_row
from tests.state.servers import start_state_server

EVERY = ("transfer", "monitor", "reporter", "retry-manager")


def _gated_source(inst: Installation, tmp_path: Path, storage, n: int, user: str) -> list[dict]:
    """``n`` requests whose source site is the gated HTTP storage (copies wait for the gate)."""
    text = inst.config_path.read_text().replace((tmp_path / "aso" / "sites" / "T2_XX_Source").as_uri(), storage.url)
    inst.config_path.write_text(text)
    requests = inst.make_requests([user], n, links=LINKS[:1], missing=n)
    for req in requests:
        path = storage.root / req["source_lfn"].lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"payload " + req["source_lfn"].encode())
    return requests


def test_a_kill_while_the_submission_is_pending_is_not_ignored(tmp_path, pki, backend_settings):
    """FTS unreachable: the chunks wait in a write-ahead record. One of them had in fact
    landed in FTS (a pass killed mid-submission). The user kills the task meanwhile: nothing
    may be copied, every row ends KILLED, and the chunk that landed is canceled in FTS."""
    with http_storage(tmp_path / "web") as storage:
        storage.behaviour.gate.clear()
        fts = PlainFts(tmp_path / "fts")  # nobody listens yet
        try:
            inst = Installation(tmp_path / "aso", fts.url, *backend_settings, "transfer.max_files_per_job=2")
            (user,) = users_for(pki, inst, 1)
            requests = _gated_source(inst, tmp_path, storage, 4, user)
            inst.inject(requests)
            assert inst.aso("transfer", check=False).returncode == 3
            assert set(inst.states().values()) == {"ACQUIRED"}
            submit = Sandbox(inst.config.sandbox.root, "submit")
            (entry,) = submit.entries()
            chunks = submit.load(entry)["chunks"]
            assert len(chunks) == 2
            fts.start()
            # the first chunk had landed before the pass died
            tool = open_transfer_tool("fts3", fts.url, "/no-proxy-over-plain-http")
            landed = tool.submit([Transfer(**t) for t in chunks[0]["transfers"]], JobOptions(), chunks[0]["sid"])
            tool.close()

            inst.aso("kill", "--task", requests[0]["taskname"])
            assert set(inst.states().values()) == {"KILL"}
            for _ in range(3):
                inst.round(*EVERY)
            assert set(inst.states().values()) == {"KILLED"}
            assert fts.job(landed)["job_state"] == "CANCELED"
            jobs = fts_jobs_by_row(fts.db)
            assert set(jobs) == {t["id"] for t in chunks[0]["transfers"]}  # nothing more was submitted
            storage.behaviour.gate.set()
            time.sleep(1)
            for req in requests:
                assert not inst.local_path(req["destination"], req["destination_lfn"]).exists()
            assert inst.sandbox_entries() == {"monitor": 0, "reporter": 0, "submit": 0, "stage": 0}
        finally:
            storage.behaviour.gate.set()
            fts.stop()


def test_a_kill_after_fts_finished_the_copy_ends_done(tmp_path, pki, fts, backend_settings):
    inst = installation(tmp_path, fts, *backend_settings)
    (user,) = users_for(pki, inst, 1)
    requests = inst.make_requests([user], 3, links=LINKS[:1])
    inst.inject(requests)
    inst.aso("transfer")
    job_id = inst.rows()[0]["tm_fts_id"]
    deadline = time.monotonic() + 30
    while not all(inst.local_path(r["destination"], r["destination_lfn"]).exists() for r in requests):
        assert time.monotonic() < deadline, "FTS never copied the files"
        time.sleep(0.1)
    import sqlite3

    while True:  # the job is FINISHED in FTS; the monitor has not seen it yet
        with sqlite3.connect(fts.db) as conn:
            if conn.execute("SELECT job_state FROM t_job WHERE job_id = ?", (job_id,)).fetchone()[0] == "FINISHED":
                break
        assert time.monotonic() < deadline
        time.sleep(0.1)
    inst.aso("kill", "--task", requests[0]["taskname"])
    assert set(inst.states().values()) == {"KILL"}
    out = json.loads(inst.aso("retry-manager", "--json").stdout)
    assert out["done"] == 3 and out["killed"] == 0
    assert set(inst.states().values()) == {"DONE"}  # the files are there: DONE is the truth
    inst.aso("monitor")
    summary = json.loads(inst.aso("reporter", "--json").stdout)
    # the reporter recorded nothing (the rows were DONE already): its summary says so
    assert summary["states"] == {} and summary["entries"] == 1
    assert set(inst.states().values()) == {"DONE"}
    assert inst.sandbox_entries() == {"monitor": 0, "reporter": 0, "submit": 0, "stage": 0}


def test_bad_sandbox_entries_are_quarantined_and_everyone_else_goes_on(tmp_path, pki, fts, backend_settings):
    inst = installation(tmp_path, fts, *backend_settings)
    (user,) = users_for(pki, inst, 1)
    inst.inject(inst.make_requests([user], 4, links=LINKS[:1]))
    root = Path(inst.config.sandbox.root)
    bad = {"monitor": "[]", "reporter": "{}", "submit": '{"chunks": 5}'}
    for kind, content in bad.items():
        folder = root / kind / "mallory"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"bad-{kind}.json").write_text(content)
    (root / "reporter" / user).mkdir(parents=True, exist_ok=True)
    (root / "reporter" / user / "a-folder.json").mkdir()  # unreadable as an entry, even for root
    logs = ""
    for _ in range(20):
        for component in EVERY:
            logs += inst.aso(component).stderr
        if all_in("DONE")(inst.rows()):
            break
    assert set(inst.states().values()) == {"DONE"}
    for kind, content in bad.items():
        assert (root / kind / ".quarantine" / "mallory" / f"bad-{kind}.json").read_text() == content
        assert f"mallory/bad-{kind}" in logs
    assert (root / "reporter" / ".quarantine" / user / "a-folder.json").is_dir()
    assert "ERROR" in logs and "Traceback" not in logs
    assert inst.sandbox_entries() == {"monitor": 0, "reporter": 0, "submit": 0, "stage": 0}


def test_an_unwritable_sandbox_is_one_clear_error_and_loses_nothing(tmp_path, pki, fts, backend_settings):
    inst = installation(tmp_path, fts, *backend_settings)
    (user,) = users_for(pki, inst, 1)
    inst.inject(inst.make_requests([user], 4, links=LINKS[:1]))
    monitor_dir = Path(inst.config.sandbox.root) / "monitor"
    if monitor_dir.exists():
        monitor_dir.rmdir()
    monitor_dir.write_text("a file where the monitor folder should be")  # unwritable, even for root
    for _ in range(2):
        res = inst.aso("transfer", check=False)
        assert res.returncode != 0
        assert "Traceback" not in res.stderr
        assert res.stderr.count("error:") == 1, res.stderr
        assert str(monitor_dir) in "".join(res.stderr.split()), res.stderr  # the console wraps long lines
    monitor_dir.unlink()
    inst.run_until(all_in("DONE"))
    assert all(len(jobs) == 1 for jobs in fts_jobs_by_row(fts.db).values())  # submitted once
    assert inst.sandbox_entries() == {"monitor": 0, "reporter": 0, "submit": 0, "stage": 0}


def test_max_retry_zero_is_not_read_as_missing(tmp_path, pki, fts, backend_settings):
    inst = installation(tmp_path, fts, *backend_settings, "fts.retry=-1", "transfer.max_retry=3")
    (user,) = users_for(pki, inst, 1)
    requests = inst.make_requests([user], 2, links=LINKS[:1], missing=1)
    for req in requests:
        req["max_retry"] = 0
    inst.inject(requests)
    inst.run_until(all_in("DONE", "FAILED", "RETRY"), rounds=20)
    rows = {r["tm_source_lfn"]: r for r in inst.rows()}
    missing = rows[requests[0]["source_lfn"]]
    assert missing["tm_transfer_state"] == "FAILED" and missing["tm_transfer_retry_count"] == 0
    assert rows[requests[1]["source_lfn"]]["tm_transfer_state"] == "DONE"


def test_reporter_exits_3_with_the_state_server_down(tmp_path, pki, fts):
    folder = tmp_path / "state-server"
    folder.mkdir()
    service, url = start_state_server(folder)
    try:
        inst = installation(tmp_path, fts, f"state.url={url}", 'state.token="service-token"', 'aso.instance="test"')
        (user,) = users_for(pki, inst, 1)
        inst.inject(inst.make_requests([user], 2, links=LINKS[:1]))
        inst.aso("transfer")
        for _ in range(50):
            inst.aso("monitor")
            if inst.sandbox_entries()["monitor"] == 0:
                break
            time.sleep(0.2)
        assert inst.sandbox_entries()["reporter"] >= 1
        kept = inst.sandbox_entries()["reporter"]
        service.stop()
        res = inst.aso("reporter", check=False, timeout=300)
        assert res.returncode == 3, res
        assert "Traceback" not in res.stderr and "unreachable" in res.stderr
        assert inst.sandbox_entries()["reporter"] == kept  # the results wait for the next pass
    finally:
        service.stop()


def test_retry_manager_exits_3_with_fts_down(tmp_path, pki, backend_settings):
    with http_storage(tmp_path / "web") as storage:
        storage.behaviour.gate.clear()
        fts = PlainFts(tmp_path / "fts")
        fts.start()
        try:
            inst = Installation(tmp_path / "aso", fts.url, *backend_settings)
            (user,) = users_for(pki, inst, 1)
            requests = _gated_source(inst, tmp_path, storage, 2, user)
            inst.inject(requests)
            inst.aso("transfer")
            inst.aso("kill", "--task", requests[0]["taskname"])
            fts.stop()
            res = inst.aso("retry-manager", "--json", check=False)
            assert res.returncode == 3, res
            assert json.loads(res.stdout)["unreachable"] == [fts.url]
            assert set(inst.states().values()) == {"KILL"}  # canceled next pass, never lost
            fts.start()
            inst.aso("retry-manager")
            assert set(inst.states().values()) == {"KILLED"}
        finally:
            storage.behaviour.gate.set()
            fts.stop()


def test_a_site_missing_from_the_configuration_is_a_configuration_error(tmp_path, pki, fts, backend_settings):
    # Rows naming a site this host's configuration lacks are not the rows' fault: they go
    # back to NEW untouched, the pass exits 2 naming the site, and once the operator adds
    # the site they are transferred (they used to be FAILED for good, with exit 0).
    inst = installation(tmp_path, fts, *backend_settings)
    (user,) = users_for(pki, inst, 1)
    requests = inst.make_requests([user], 3, links=LINKS[:1])
    for r in requests:
        r["destination"] = "T2_NEW_Dest"
    inst.inject(requests)
    res = inst.aso("--log-level", "ERROR", "transfer", check=False)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "sites.T2_NEW_Dest" in lines[0] and "Traceback" not in res.stderr
    assert set(inst.states().values()) == {"NEW"}
    folder = tmp_path / "new-dest"
    with open(inst.config_path, "a") as fh:
        fh.write(f'\n[sites.T2_NEW_Dest]\nprefix = "{folder.as_uri()}"\nfts = "{fts.url}"\n')
    inst.config = load_config(str(inst.config_path))
    inst.run_until(all_in("DONE"))
    for r in requests:
        assert (folder / r["destination_lfn"].lstrip("/")).read_bytes() == inst.local_path(r["source"], r["source_lfn"]).read_bytes()
