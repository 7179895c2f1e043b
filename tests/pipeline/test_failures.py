"""How the pipeline fails: retries after the cool-off, permanent errors, kills mid-transfer,
users without a proxy, FTS down, jobs FTS forgot, timeouts. Local and REST backends."""

from __future__ import annotations

import json
import sqlite3
import time

from tests.ftsd.fts import PlainFts
from tests.ftsd.storage import http_storage
from tests.pipeline.conftest import installation, users_for
from tests.pipeline.harness import LINKS, Installation, all_in, fts_jobs_by_row

EVERY = ("transfer", "monitor", "reporter", "retry-manager")


def test_missing_source_is_retried_after_the_cooloff_then_failed(tmp_path, pki, fts, backend_settings):
    # the cool-off must outlast starting a retry-manager process on a loaded machine
    inst = installation(tmp_path, fts, *backend_settings, "fts.retry=-1", "retry_manager.cooloff=5", "transfer.max_retry=3")
    (user,) = users_for(pki, inst, 1)
    requests = inst.make_requests([user], 4, links=LINKS[:1], missing=1)
    inst.inject(requests)
    missing_id = next(r["tm_id"] for r in inst.rows() if r["tm_source_lfn"] == requests[0]["source_lfn"])

    inst.run_until(lambda rows: {r["tm_id"]: r["tm_transfer_state"] for r in rows}[missing_id] == "RETRY")
    inst.aso("retry-manager")
    assert inst.states()[missing_id] == "RETRY"  # still cooling off
    time.sleep(6.2)  # last updates are whole seconds: a 5 s cool-off can take up to 6 s to be over
    inst.aso("retry-manager")
    assert inst.states()[missing_id] == "NEW"

    inst.run_until(all_in("DONE", "FAILED"), components=EVERY, pause=1.1, rounds=60)
    rows = {r["tm_id"]: r for r in inst.rows()}
    failed = rows.pop(missing_id)
    assert failed["tm_transfer_state"] == "FAILED"
    # [transfer] max_retry = 3 is stored in the row at injection (it used to be a fixed 2):
    # three retries, so four attempts, by CRAB's rule count + 1 > max_retry
    assert failed["tm_transfer_retry_count"] == 3
    assert failed["tm_transfer_failure_reason"].startswith("SOURCE [2] ")
    assert "No such file or directory" in failed["tm_transfer_failure_reason"]
    assert {r["tm_transfer_state"] for r in rows.values()} == {"DONE"}
    assert len(fts_jobs_by_row(fts.db)[missing_id]) == 4
    assert inst.sandbox_entries() == {"monitor": 0, "reporter": 0, "submit": 0, "stage": 0}


def test_a_permanent_error_fails_at_once(tmp_path, pki, fts, backend_settings):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    inst = installation(tmp_path, fts, *backend_settings, 'reporter.permanent_errors=["not a directory"]')
    text = inst.config_path.read_text().replace((tmp_path / "aso" / "sites" / "T2_ZZ_Dest").as_uri(), (blocker / "dest").as_uri())
    inst.config_path.write_text(text)
    (user,) = users_for(pki, inst, 1)
    inst.inject(inst.make_requests([user], 2, links=LINKS[1:2]))  # XX -> ZZ: ZZ cannot be created
    inst.run_until(all_in("FAILED"))
    for row in inst.rows():
        assert row["tm_transfer_retry_count"] == 0
        assert "Not a directory" in row["tm_transfer_failure_reason"]


def test_kill_mid_transfer_cancels_in_fts_and_ends_killed(tmp_path, pki, fts, backend_settings):
    with http_storage(tmp_path / "web") as storage:
        storage.behaviour.gate.clear()  # every read of a source waits
        inst = installation(tmp_path, fts, *backend_settings)
        text = inst.config_path.read_text().replace((tmp_path / "aso" / "sites" / "T2_XX_Source").as_uri(), storage.url)
        inst.config_path.write_text(text)
        (user,) = users_for(pki, inst, 1)
        requests = inst.make_requests([user], 3, links=LINKS[:1], missing=3)
        for req in requests:
            path = storage.root / req["source_lfn"].lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"payload " + req["source_lfn"].encode())
        inst.inject(requests)
        inst.round("transfer", "monitor")
        assert set(inst.states().values()) == {"SUBMITTED"}
        deadline = time.monotonic() + 20
        while storage.behaviour.active_gets == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert storage.behaviour.active_gets > 0, "FTS never started copying"

        inst.aso("kill", "--task", requests[0]["taskname"])
        assert set(inst.states().values()) == {"KILL"}
        inst.aso("retry-manager")
        assert set(inst.states().values()) == {"KILLED"}
        job_id = inst.rows()[0]["tm_fts_id"]
        storage.behaviour.gate.set()
        # FTS says CANCELED; the monitor and the reporter drain their sandboxes and change nothing
        for _ in range(20):
            inst.round("monitor", "reporter")
            if inst.sandbox_entries() == {"monitor": 0, "reporter": 0, "submit": 0, "stage": 0}:
                break
            time.sleep(0.2)
        assert inst.sandbox_entries() == {"monitor": 0, "reporter": 0, "submit": 0, "stage": 0}
        assert set(inst.states().values()) == {"KILLED"}
        with sqlite3.connect(fts.db) as conn:
            assert conn.execute("SELECT job_state FROM t_job WHERE job_id = ?", (job_id,)).fetchone()[0] == "CANCELED"
        for req in requests:
            assert not inst.local_path(req["destination"], req["destination_lfn"]).exists()


def test_a_user_without_a_proxy_is_skipped_until_one_appears(tmp_path, pki, fts, backend_settings):
    inst = installation(tmp_path, fts, *backend_settings)
    (with_proxy,) = users_for(pki, inst, 1)
    late = pki.add_user(f"late{time.monotonic_ns()}")
    inst.inject(inst.make_requests([with_proxy, late.name], 3, links=LINKS[:1]))
    out = inst.aso("transfer", "--json").stdout
    assert late.name in out and "users_skipped" in out
    log = inst.aso("transfer").stderr
    assert f"user {late.name} skipped: no usable proxy" in log
    by_user = {}
    for r in inst.rows():
        by_user.setdefault(r["tm_username"], set()).add(r["tm_transfer_state"])
    assert by_user[late.name] == {"ACQUIRED"} and by_user[with_proxy] == {"SUBMITTED"}
    inst.add_proxy(late.name, late.proxy_path)
    inst.run_until(all_in("DONE"))


def test_fts_down_during_monitor_loses_nothing(tmp_path, pki, backend_settings):
    fts = PlainFts(tmp_path / "fts")
    fts.start()
    try:
        inst = Installation(tmp_path / "aso", fts.url, *backend_settings)
        (user,) = users_for(pki, inst, 1)
        inst.inject(inst.make_requests([user], 5, links=LINKS[:1]))
        inst.aso("transfer")
        fts.stop()
        res = inst.aso("monitor", check=False)
        assert res.returncode == 3, res
        assert "unreachable" in res.stderr and fts.url in res.stderr
        assert inst.sandbox_entries()["monitor"] == 1
        assert set(inst.states().values()) == {"SUBMITTED"}
        fts.start()
        inst.run_until(all_in("DONE"))
        assert inst.sandbox_entries() == {"monitor": 0, "reporter": 0, "submit": 0, "stage": 0}
    finally:
        fts.stop()


def test_fts_down_during_transfer_keeps_the_chunks_and_submits_them_once(tmp_path, pki, backend_settings):
    fts = PlainFts(tmp_path / "fts")  # its port is chosen, nobody listens yet
    try:
        # one user at a time, so which users find the endpoint already marked down is certain
        inst = Installation(tmp_path / "aso", fts.url, *backend_settings, "transfer.max_files_per_job=2",
                            "transfer.threads=1")
        users = users_for(pki, inst, 3)
        inst.inject(inst.make_requests(users, 5, links=LINKS[:2]))
        res = inst.aso("transfer", "--json", check=False)
        assert res.returncode == 3, res
        assert "unreachable" in res.stderr
        summary = json.loads(res.stdout)
        assert summary["unreachable"] == [fts.url]
        # the first user to find it down waits out the client's retries; the others do not try
        assert sum("unreachable earlier in this pass" in e for e in summary["errors"]) == 2
        assert inst.sandbox_entries() == {"monitor": 0, "reporter": 0, "submit": 3, "stage": 0}  # each user's chunks, kept
        assert set(inst.states().values()) == {"ACQUIRED"}
        fts.start()
        inst.run_until(all_in("DONE"))
        assert inst.sandbox_entries() == {"monitor": 0, "reporter": 0, "submit": 0, "stage": 0}
        jobs = fts_jobs_by_row(fts.db)
        assert all(len(jobs[r["tm_id"]]) == 1 for r in inst.rows())
        assert len({j for js in jobs.values() for j in js}) == 3 * 3  # per user: 3 files on one link, 2 on the other
    finally:
        fts.stop()


def test_jobs_fts_forgot_and_jobs_past_their_timeout(tmp_path, pki, backend_settings):
    with http_storage(tmp_path / "web") as storage:
        storage.behaviour.gate.clear()
        fts = PlainFts(tmp_path / "fts")
        fts.start()
        try:
            inst = Installation(tmp_path / "aso", fts.url, *backend_settings, "monitor.job_timeout=5",
                                "transfer.max_files_per_job=1")
            text = inst.config_path.read_text().replace((tmp_path / "aso" / "sites" / "T2_XX_Source").as_uri(), storage.url)
            inst.config_path.write_text(text)
            (user,) = users_for(pki, inst, 1)
            requests = inst.make_requests([user], 2, links=LINKS[:1], missing=2)
            for req in requests:
                path = storage.root / req["source_lfn"].lstrip("/")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"x")
            inst.inject(requests)
            inst.aso("transfer")
            rows = inst.rows()
            assert rows[0]["tm_fts_id"] != rows[1]["tm_fts_id"]
            # FTS forgets the first job (as FTS3 does once it purges old jobs)
            with sqlite3.connect(fts.db) as conn:
                conn.execute("DELETE FROM t_file WHERE job_id = ?", (rows[0]["tm_fts_id"],))
                conn.execute("DELETE FROM t_job WHERE job_id = ?", (rows[0]["tm_fts_id"],))
            inst.round("monitor", "reporter")
            states = {r["tm_id"]: r for r in inst.rows()}
            lost = states[rows[0]["tm_id"]]
            assert lost["tm_transfer_state"] == "RETRY" and "FTS does not know this job" in lost["tm_transfer_failure_reason"]
            assert states[rows[1]["tm_id"]]["tm_transfer_state"] == "SUBMITTED"
            time.sleep(5.2)  # a timeout well above a loaded machine's monitor and reporter round
            out = inst.aso("monitor").stderr
            assert "abandoned" in out
            inst.aso("reporter")
            timed_out = {r["tm_id"]: r for r in inst.rows()}[rows[1]["tm_id"]]
            assert timed_out["tm_transfer_state"] == "RETRY"
            assert "monitor.job_timeout" in timed_out["tm_transfer_failure_reason"]
            assert inst.sandbox_entries() == {"monitor": 0, "reporter": 0, "submit": 0, "stage": 0}
        finally:
            storage.behaviour.gate.set()
            fts.stop()


def test_stuck_rows_are_recovered_and_never_released_under_a_running_transfer(tmp_path, pki, fts, backend_settings):
    from aso.locking import component_lock
    from aso.sandbox import Sandbox
    from aso.state import backend_from_config

    inst = installation(tmp_path, fts, *backend_settings, "retry_manager.stuck_after=1")
    (user,) = users_for(pki, inst, 1)
    inst.inject(inst.make_requests([user], 6, links=LINKS[:1]))
    # what a transfer pass killed after acquiring and before writing its record leaves behind
    backend = backend_from_config(inst.config)
    try:
        assert backend.acquire_transfers([user], 3) == 3
    finally:
        backend.close()
    time.sleep(2.2)  # last updates are whole seconds: stuck_after=1 can take 2 s to be over
    with component_lock(inst.config.aso.lock_dir, "transfer"):  # a transfer pass is running
        out = json.loads(inst.aso("retry-manager", "--json").stdout)
        assert out["released"] == 0
        assert sorted(inst.states().values()) == ["ACQUIRED"] * 3 + ["NEW"] * 3
    out = json.loads(inst.aso("retry-manager", "--json").stdout)
    assert out["released"] == 3 and set(inst.states().values()) == {"NEW"}

    # SUBMITTED rows whose monitor entries were lost are polled again
    inst.aso("transfer")
    monitor = Sandbox(inst.config.sandbox.root, "monitor")
    for entry in list(monitor.entries()):
        entry.path.unlink()
    time.sleep(2.2)  # last updates are whole seconds: stuck_after=1 can take 2 s to be over
    out = json.loads(inst.aso("retry-manager", "--json").stdout)
    assert out["repolled"] == 6
    inst.run_until(all_in("DONE"), components=("monitor", "reporter"))
    assert len({r["tm_fts_id"] for r in inst.rows()}) == 1  # nothing was submitted again
