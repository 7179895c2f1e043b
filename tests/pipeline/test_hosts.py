"""Two hosts (two installations, each its own worker name and sandbox) on one state backend
and one ``aso fts-server``: a host that dies has its work taken over by the other, which
follows its FTS jobs to the end, resubmits what it had planned under the same sids (FTS
answers with the job already made: every file in exactly one job), and a host that
returns finds its work gone and its stale writes refused."""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest

from aso.cli.common import EXIT_FENCED, as_cli_error
from aso.components.passes import Heartbeater
from aso.components.pipeline import PipelineSettings
from aso.components.transfer import TransferPass
from aso.credentials import proxy_source_from_config
from aso.errors import FencedError
from aso.state import backend_from_config
from aso.transfertools import tool_factory_from_config
from tests.pipeline.conftest import installation, users_for
from tests.pipeline.harness import Installation, all_in, fts_jobs_by_row

TIMEOUT = 2  # [aso] heartbeat_timeout of both hosts: a silent host is dead after 2 s
#: the state database refuses to mark rows SUBMITTED: the host dies between FTS and that mark
_NO_SUBMITTED = ("CREATE TRIGGER no_submitted BEFORE UPDATE OF tm_transfer_state ON filetransfersdb "
                 "WHEN NEW.tm_transfer_state = 5 BEGIN SELECT RAISE(ABORT, 'state backend refuses SUBMITTED'); END")


def two_hosts(tmp_path: Path, fts, pki, n_users: int = 2) -> tuple[Installation, Installation, list[str], Path]:
    db = tmp_path / "shared-state.db"
    common = (f'state.url="sqlite:///{db}"', f"aso.heartbeat_timeout={TIMEOUT}")
    host_a = installation(tmp_path / "a", fts, *common, 'aso.worker="host-a"')
    sites = {name: site.prefix for name, site in host_a.config.sites.items()}
    host_b = Installation(tmp_path / "b" / "aso", fts.url, f'fts.ca_dir="{fts.ca_dir}"', "transfer.max_files_per_job=50",
                          *common, 'aso.worker="host-b"', sites=sites)
    users = users_for(pki, host_a, n_users)
    for user in users:
        host_b.add_proxy(user, pki.users[user].proxy_path)
    return host_a, host_b, users, db


def die(host: Installation) -> None:
    """The host is gone, its disk with it: the sandboxes (write-ahead records, monitor entries)."""
    shutil.rmtree(host.config.sandbox.root)
    time.sleep(TIMEOUT + 0.5)


def assert_each_file_in_one_job(rows: list[dict], fts_db: Path) -> None:
    jobs = fts_jobs_by_row(fts_db)
    assert all(len(jobs[r["tm_id"]]) == 1 for r in rows), {r["tm_id"]: jobs.get(r["tm_id"]) for r in rows}
    assert all(r["tm_fts_id"] == jobs[r["tm_id"]][0] for r in rows)


def test_a_dead_hosts_submitted_jobs_are_followed_to_the_end_by_the_other(tmp_path, pki, fts):
    host_a, host_b, users, _ = two_hosts(tmp_path, fts, pki)
    requests = host_a.make_requests(users, 12)
    host_a.inject(requests)
    host_a.aso("transfer")
    assert Counter(r["tm_transfer_state"] for r in host_a.rows()) == {"SUBMITTED": 24}
    die(host_a)

    res = host_b.aso("transfer", "--json")
    assert '"acquired": 0' in res.stdout  # nothing new: the rows came by takeover
    host_b.run_until(all_in("DONE"), components=("monitor", "reporter"))
    rows = host_b.rows()
    assert Counter(r["tm_aso_worker"] for r in rows) == {"host-b": 24}
    assert_each_file_in_one_job(rows, fts.db)
    for req in requests:
        assert host_b.local_path(req["destination"], req["destination_lfn"]).read_bytes() == \
            host_b.local_path(req["source"], req["source_lfn"]).read_bytes()
    assert host_b.sandbox_entries() == {"monitor": 0, "reporter": 0, "submit": 0, "stage": 0}
    hosts = host_b.aso("status", "--hosts", "--json").stdout
    assert '"taken_over_by": "host-b"' in hosts and '"state": "taken-over"' in hosts


def test_a_host_dead_between_fts_and_the_submitted_mark_costs_no_second_job(tmp_path, pki, fts):
    host_a, host_b, users, db = two_hosts(tmp_path, fts, pki)
    host_a.inject(host_a.make_requests(users, 10))
    with sqlite3.connect(db) as conn:
        conn.execute(_NO_SUBMITTED)
    res = host_a.aso("transfer", check=False)
    assert res.returncode != 0
    rows = host_a.rows()
    assert {r["tm_transfer_state"] for r in rows} == {"ACQUIRED"} and all(r["tm_sid"] for r in rows)
    submitted = fts_jobs_by_row(fts.db)
    assert all(len(submitted.get(r["tm_id"], [])) == 1 for r in rows)  # FTS has every file already
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TRIGGER no_submitted")
    die(host_a)

    host_b.run_until(all_in("DONE"))
    rows = host_b.rows()
    assert Counter(r["tm_aso_worker"] for r in rows) == {"host-b": 20}
    assert_each_file_in_one_job(rows, fts.db)
    # the very jobs host-a had made before it died
    assert {r["tm_id"]: r["tm_fts_id"] for r in rows} == {r["tm_id"]: submitted[r["tm_id"]][0] for r in rows}


def test_a_returning_host_is_fenced_mid_pass_and_then_leaves_the_new_owners_rows_alone(tmp_path, pki, fts):
    host_a, host_b, users, db = two_hosts(tmp_path, fts, pki)
    host_a.inject(host_a.make_requests(users, 6))
    with sqlite3.connect(db) as conn:
        conn.execute(_NO_SUBMITTED)
    assert host_a.aso("transfer", check=False).returncode != 0  # its write-ahead record stays on its disk
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TRIGGER no_submitted")
    # host-a's transfer process is paused right after its heartbeat: its backend holds the
    # generation that heartbeat answered
    config = host_a.config
    stale = backend_from_config(config)
    try:
        assert Heartbeater(stale, "transfer", TIMEOUT).beat().generation == 1
        time.sleep(TIMEOUT + 0.5)
        host_b.aso("transfer")  # host-b takes host-a over and resubmits its chunks
        host_a.inject(host_a.make_requests(users, 2, task_prefix="later"))  # new work comes in meanwhile
        before = {r["tm_id"]: r for r in host_b.rows()}
        assert Counter(r["tm_aso_worker"] for r in before.values()) == {"host-b": 12, None: 4}
        # ...and it wakes up: its first write is refused, and nothing changes
        stale_pass = TransferPass(stale, proxy_source_from_config(config), tool_factory_from_config(config),
                                  config.topology(), PipelineSettings.from_config(config))
        with pytest.raises(FencedError) as err:
            stale_pass.run()
        assert as_cli_error(err.value).exit_code == EXIT_FENCED
        assert {r["tm_id"]: r for r in host_b.rows()} == before
    finally:
        stale.close()
    # a new pass of host-a heartbeats and rejoins; the rows of its old record are host-b's
    # now, so nothing of them is submitted again (the new work is shared between the two)
    host_a.aso("transfer")
    assert host_a.sandbox_entries()["submit"] == 0
    for _ in range(40):
        for host in (host_a, host_b):
            host.round("transfer", "monitor", "reporter")
        if all_in("DONE")(host_b.rows()):
            break
    rows = host_b.rows()
    assert all_in("DONE")(rows) and len(rows) == 16
    assert_each_file_in_one_job(rows, fts.db)
    assert '"worker": "host-a"' in host_b.aso("status", "--hosts", "--json").stdout


def transfer_pass(host: Installation, page_rows: int) -> TransferPass:
    config = host.config
    backend = backend_from_config(config)
    return TransferPass(backend, proxy_source_from_config(config), tool_factory_from_config(config),
                        config.topology(), PipelineSettings.from_config(config), page_rows=page_rows)


def test_a_users_backlog_is_submitted_a_page_at_a_time(tmp_path, pki, fts):
    host = installation(tmp_path, fts)
    (user,) = users_for(pki, host, 1)
    host.inject(host.make_requests([user], 23))
    paged = transfer_pass(host, page_rows=5)
    try:
        summary = paged.run()
    finally:
        paged.backend.close()
    assert (summary.files, summary.users) == (23, 1)
    rows = host.rows()
    assert {r["tm_transfer_state"] for r in rows} == {"SUBMITTED"}
    assert_each_file_in_one_job(rows, fts.db)
    # every job is of one page: at most 5 files, though a job may hold 50
    sizes = Counter(r["tm_fts_id"] for r in rows)
    assert max(sizes.values()) <= 5 and summary.jobs == len(sizes) >= 5
    assert host.sandbox_entries()["submit"] == 0
    host.run_until(all_in("DONE"), components=("monitor", "reporter"))


def test_rows_planned_by_a_dead_host_are_resubmitted_whole_whatever_the_page(tmp_path, pki, fts):
    # host-a plans chunks of 10 rows and records their sids, but cannot reach FTS, and dies.
    # host-b, reading 4 rows a page, must not cut a chunk in two: the second part's sid
    # would answer the first part's job, which lacks its files.
    from tests.procs import free_port

    db = tmp_path / "shared-state.db"
    common = (f'state.url="sqlite:///{db}"', f"aso.heartbeat_timeout={TIMEOUT}")
    down = type("Down", (), {"url": f"https://127.0.0.1:{free_port()}", "ca_dir": fts.ca_dir})()
    host_a = installation(tmp_path / "a", down, *common, 'aso.worker="host-a"', "fts.timeout=2")
    sites = {name: site.prefix for name, site in host_a.config.sites.items()}
    host_b = Installation(tmp_path / "b" / "aso", fts.url, f'fts.ca_dir="{fts.ca_dir}"', "transfer.max_files_per_job=50",
                          *common, 'aso.worker="host-b"', sites=sites)
    users = users_for(pki, host_a, 2)
    for user in users:
        host_b.add_proxy(user, pki.users[user].proxy_path)
    host_a.inject(host_a.make_requests(users, 10))
    assert host_a.aso("transfer", check=False).returncode == 3  # FTS unreachable: chunks kept
    assert all(r["tm_sid"] and r["tm_transfer_state"] == "ACQUIRED" for r in host_a.rows())
    die(host_a)

    host_b.aso("retry-manager")  # a pass of host-b's heartbeats and takes host-a's rows over
    paged = transfer_pass(host_b, page_rows=4)
    try:
        summary = paged.run()
    finally:
        paged.backend.close()
    rows = host_b.rows()
    assert summary.adopted == 20 and {r["tm_transfer_state"] for r in rows} == {"SUBMITTED"}
    assert_each_file_in_one_job(rows, fts.db)
    host_b.run_until(all_in("DONE"), components=("monitor", "reporter"))
