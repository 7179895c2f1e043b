"""The StateBackend contract, run against local SQLite, local PostgreSQL and REST over SQLite."""

from __future__ import annotations

import time

import pytest

from aso.errors import TransitionError, ValidationError
from aso.state import PublicationUpdate, TransferUpdate
from aso.validate import lfn_id


def request(i: int, user: str = "alice", task: str = "task_a", publish: int = 0, **extra) -> dict:
    return {
        "username": user,
        "taskname": task,
        "source": "T2_XX_Source",
        "destination": "T2_YY_Dest",
        "source_lfn": f"/store/temp/user/{user}/{task}/file_{i}.root",
        "destination_lfn": f"/store/user/{user}/{task}/file_{i}.root",
        "filesize": 1000 + i,
        "checksum": "0000abcd",
        "publish": publish,
        "job_id": str(i),
        "job_retry_count": 0,
        "type": "output",
        "start_time": 1_700_000_000,
        **extra,
    }


def ids_of(rows):
    return sorted(r["tm_id"] for r in rows)


def state_of(backend, row_id):
    return backend.get_transfers([row_id])[0]["tm_transfer_state"]


def submit(backend, n=3, user="alice", task="task_a", publish=0):
    backend.inject([request(i, user, task, publish) for i in range(n)])
    backend.acquire_transfers([user], 1000)
    rows = backend.acquired_transfers(user=user)
    backend.update_transfers([TransferUpdate(r["tm_id"], "SUBMITTED", fts_id="job-1", fts_instance="https://fts:8446") for r in rows])
    return [r["tm_id"] for r in rows]


def test_inject_and_read_back(backend):
    result = backend.inject([request(1), request(2, publish=1)])
    assert len(result.inserted) == 2 and not result.skipped
    rows = backend.get_transfers([lfn_id(request(1)["source_lfn"]), lfn_id(request(2)["source_lfn"])])
    assert {r["tm_transfer_state"] for r in rows} == {"NEW"}
    assert {r["tm_publication_state"] for r in rows} == {"NOT_REQUIRED", "NEW"}
    row = next(r for r in rows if r["tm_publish"] == 1)
    assert row["tm_checksum"] == "0000abcd"
    assert row["tm_username"] == "alice" and row["tm_aso_worker"] is None
    assert row["tm_id"] == lfn_id(row["tm_source_lfn"])
    task = backend.get_task("task_a")
    assert task["tm_username"] == "alice"


def test_bad_request_writes_nothing(backend):
    bad = request(2)
    bad["destination_lfn"] = "/store/../etc/passwd"
    with pytest.raises(ValidationError) as err:
        backend.inject([request(1), bad])
    assert err.value.field == "[1].destination_lfn"
    assert backend.list_transfers() == []


def test_reinjection_rules(backend):
    backend.inject([request(1)])
    again = backend.inject([request(1)])
    assert again.skipped and again.skipped[0]["reason"] == "still in flight"
    row_id = lfn_id(request(1)["source_lfn"])
    backend.acquire_transfers(["alice"], 10)
    backend.update_transfers([TransferUpdate(row_id, "SUBMITTED", fts_id="j")])
    backend.update_transfers([TransferUpdate(row_id, "FAILED", reason="boom")])
    same = backend.inject([request(1)])
    assert same.skipped[0]["reason"] == "same job retry already recorded"
    retried = backend.inject([request(1, job_retry_count=1, start_time=1_700_000_500)])
    assert retried.reinitialised == [row_id]
    row = backend.get_transfers([row_id])[0]
    assert row["tm_transfer_state"] == "NEW" and row["tm_fts_id"] is None and row["tm_job_retry_count"] == 1


def test_direct_stageout_is_done_at_injection(backend):
    backend.inject([request(1, transfer_state="DONE", publish=1)])
    row = backend.list_transfers()[0]
    assert row["tm_transfer_state"] == "DONE" and row["tm_publication_state"] == "NEW"


def test_active_users_and_acquire_with_exact_limit(make_backend):
    a, b = make_backend("worker-a"), make_backend("worker-b")
    a.inject([request(i) for i in range(5)] + [request(i, user="bob") for i in range(3)])
    assert a.active_users() == ["alice", "bob"]
    assert a.acquire_transfers(["alice", "bob"], 2) == 4
    assert len(a.acquired_transfers()) == 4
    assert len(a.acquired_transfers(user="bob", limit=1)) == 1
    assert b.acquire_transfers(["alice", "bob"], 10) == 4  # the rest only
    assert a.active_users() == ["alice", "bob"]  # ACQUIRED by a
    assert len(b.acquired_transfers()) == 4
    assert a.acquire_transfers(["alice"], 10) == 0


def test_update_transfers_and_transition_rules(backend):
    ids = submit(backend, 3)
    row = backend.get_transfers([ids[0]])[0]
    assert row["tm_fts_id"] == "job-1" and row["tm_fts_instance"] == "https://fts:8446"
    with pytest.raises(TransitionError) as err:
        backend.update_transfers([TransferUpdate(ids[0], "DONE"), TransferUpdate(ids[1], "NEW")])
    assert (err.value.row_id, err.value.current, err.value.requested) == (ids[1], "SUBMITTED", "NEW")
    assert state_of(backend, ids[0]) == "SUBMITTED"  # all-or-nothing
    result = backend.update_transfers([
        TransferUpdate(ids[0], "DONE"),
        TransferUpdate(ids[1], "RETRY", reason="x" * 2000),
        TransferUpdate(ids[2], "FAILED", reason="no space"),
    ])
    assert sorted(result.updated) == sorted(ids)
    rows = {r["tm_id"]: r for r in backend.get_transfers(ids)}
    assert rows[ids[0]]["tm_end_time"] is not None and rows[ids[0]]["tm_fts_id"] == "job-1"
    assert len(rows[ids[1]]["tm_transfer_failure_reason"]) == 1000
    assert rows[ids[2]]["tm_transfer_failure_reason"] == "no space"


def test_unknown_state_is_a_validation_error(backend):
    ids = submit(backend, 1)
    with pytest.raises(ValidationError, match="FINISHED"):
        backend.update_transfers([TransferUpdate(ids[0], "FINISHED")])


def test_guards_skip_late_results(backend):
    ids = submit(backend, 2)
    backend.request_kill(ids=[ids[0]])
    result = backend.update_transfers([
        TransferUpdate(ids[0], "DONE", expect_state="SUBMITTED", expect_fts_id="job-1"),
        TransferUpdate(ids[1], "DONE", expect_state="SUBMITTED", expect_fts_id="another-job"),
    ])
    assert result.updated == []
    assert {s["id"] for s in result.skipped} == set(ids)
    assert state_of(backend, ids[0]) == "KILL" and state_of(backend, ids[1]) == "SUBMITTED"
    repeat = backend.update_transfers([TransferUpdate(ids[1], "SUBMITTED", fts_id="job-1")])
    assert repeat.skipped[0]["reason"] == "already SUBMITTED"


def test_alike_updates_change_only_the_rows_their_guards_let_through(make_backend):
    """A chunk's rows going SUBMITTED with one job (and a job's files going DONE) are applied
    a group at a time; a row killed meanwhile, already submitted, or another worker's is
    skipped with its reason, as row by row."""
    a, b = make_backend("worker-a"), make_backend("worker-b")
    a.inject([request(i) for i in range(8)] + [request(i, user="bob", task="task_b") for i in range(2)])
    a.acquire_transfers(["alice"], 1000)
    b.acquire_transfers(["bob"], 1000)
    ids = sorted(r["tm_id"] for r in a.acquired_transfers())
    bobs = sorted(r["tm_id"] for r in b.acquired_transfers())
    a.request_kill(ids=[ids[0]])
    a.update_transfers([TransferUpdate(ids[1], "SUBMITTED", fts_id="job-0", fts_instance="https://f",
                                       expect_state="ACQUIRED")])
    chunk = ids + bobs[:1]
    result = a.update_transfers([TransferUpdate(i, "SUBMITTED", fts_id="job-1", fts_instance="https://f",
                                                expect_state="ACQUIRED") for i in chunk])
    assert sorted(result.updated) == ids[2:]
    assert sorted(result.skipped, key=lambda s: s["id"]) == sorted([
        {"id": ids[0], "state": "KILL", "reason": "expected ACQUIRED"},
        {"id": ids[1], "state": "SUBMITTED", "reason": "expected ACQUIRED"},
        {"id": bobs[0], "state": "ACQUIRED", "reason": "owned by worker-b"},
    ], key=lambda s: s["id"])
    rows = {r["tm_id"]: r for r in a.get_transfers(chunk)}
    assert {rows[i]["tm_fts_id"] for i in ids[2:]} == {"job-1"} and rows[ids[1]]["tm_fts_id"] == "job-0"
    assert rows[ids[0]]["tm_fts_id"] is None and rows[bobs[0]]["tm_transfer_state"] == "ACQUIRED"
    # a job's files: most DONE alike, two failed each with its own reason (row by row)
    done = a.update_transfers(
        [TransferUpdate(i, "DONE", expect_state="SUBMITTED", expect_fts_id="job-1") for i in ids[1:-2]]
        + [TransferUpdate(i, "RETRY", reason=f"copy failed: {i}", expect_state="SUBMITTED", expect_fts_id="job-1")
           for i in ids[-2:]])
    assert sorted(done.updated) == ids[2:]
    assert done.skipped == [{"id": ids[1], "state": "SUBMITTED", "reason": "belongs to FTS job job-0, not job-1"}]
    finished = a.get_transfers(ids[2:-2])
    assert {r["tm_transfer_state"] for r in finished} == {"DONE"} and all(r["tm_end_time"] for r in finished)
    assert [(r["tm_transfer_state"], r["tm_transfer_failure_reason"]) for r in a.get_transfers(ids[-2:])] == \
        [("RETRY", f"copy failed: {i}") for i in ids[-2:]]


def test_submitted_while_killed_keeps_kill_and_records_the_job(backend):
    backend.inject([request(1)])
    backend.acquire_transfers(["alice"], 10)
    (row,) = backend.acquired_transfers()
    backend.request_kill(task="task_a")
    backend.update_transfers([TransferUpdate(row["tm_id"], "SUBMITTED", fts_id="job-9", fts_instance="https://f")])
    row = backend.get_transfers([row["tm_id"]])[0]
    assert row["tm_transfer_state"] == "KILL" and row["tm_fts_id"] == "job-9"
    assert backend.transfers_to_kill()[0]["tm_fts_id"] == "job-9"


def test_retry_after_cooloff(backend):
    ids = submit(backend, 2)
    backend.update_transfers([TransferUpdate(i, "RETRY", reason="transient") for i in ids])
    assert backend.retry_transfers(3600) == 0
    time.sleep(1.1)
    assert backend.retry_transfers(0) == 2
    row = backend.get_transfers([ids[0]])[0]
    assert row["tm_transfer_state"] == "NEW" and row["tm_aso_worker"] is None and row["tm_transfer_retry_count"] == 1


def test_kill_and_mark_killed(backend):
    ids = submit(backend, 3)
    backend.update_transfers([TransferUpdate(ids[2], "DONE")])
    result = backend.request_kill(task="task_a")
    assert sorted(result.killed) == sorted(ids[:2])
    assert result.failed_kill[0]["id"] == ids[2] and result.failed_kill[0]["state"] == "DONE"
    assert ids_of(backend.transfers_to_kill()) == sorted(ids[:2])
    with pytest.raises(TransitionError):
        backend.mark_killed(ids)  # ids[2] is DONE
    assert backend.mark_killed(ids[:2], reason="killed by the user") == 2
    assert {state_of(backend, i) for i in ids[:2]} == {"KILLED"}
    by_id = backend.request_kill(ids=[ids[0], "f" * 56])
    assert by_id.killed == [] and {f["reason"] for f in by_id.failed_kill} == {"already KILLED", "no such transfer"}


def test_kill_needs_task_or_ids(backend):
    with pytest.raises(ValidationError):
        backend.request_kill()


def test_retry_failed_by_operator(backend):
    ids = submit(backend, 2)
    backend.update_transfers([TransferUpdate(i, "FAILED", reason="x") for i in ids])
    assert backend.retry_failed(task="task_a") == 2
    row = backend.get_transfers([ids[0]])[0]
    assert row["tm_transfer_state"] == "NEW" and row["tm_transfer_failure_reason"] is None


def test_stuck_and_release(backend):
    backend.inject([request(i) for i in range(3)])
    backend.acquire_transfers(["alice"], 10)
    assert backend.stuck_transfers(["ACQUIRED"], 3600) == []
    time.sleep(1.1)
    stuck = backend.stuck_transfers(["ACQUIRED", "SUBMITTED"], 0)
    assert len(stuck) == 3
    assert backend.release_transfers([r["tm_id"] for r in stuck]) == 3
    assert {r["tm_transfer_state"] for r in backend.list_transfers()} == {"NEW"}


def test_publication_flow_and_ownership(make_backend):
    a, b = make_backend("worker-a"), make_backend("worker-b")
    ids = submit(a, 3, publish=1)
    a.update_transfers([TransferUpdate(i, "DONE") for i in ids[:2]])
    assert b.acquire_publication() == 0  # never steals another worker's rows
    assert a.acquire_publication() == 2
    rows = a.acquired_publication()
    assert ids_of(rows) == sorted(ids[:2])
    with pytest.raises(TransitionError):
        a.update_publication([PublicationUpdate(ids[2], "DONE")])  # still NEW
    result = a.update_publication([
        PublicationUpdate(ids[0], "DONE", block_name="/a/b/USER#1"),
        PublicationUpdate(ids[1], "FAILED", reason="no metadata", retry_increment=1),
    ])
    assert sorted(result.updated) == sorted(ids[:2])
    got = {r["tm_id"]: r for r in a.get_transfers(ids)}
    assert got[ids[0]]["tm_dbs_blockname"] == "/a/b/USER#1"
    assert got[ids[1]]["tm_publication_failure_reason"] == "no metadata"
    assert got[ids[1]]["tm_publication_retry_count"] == 1
    assert a.retry_publication(task="task_a") == 1
    assert a.get_transfers([ids[1]])[0]["tm_publication_state"] == "NEW"


def test_alike_publication_updates_are_all_or_nothing_and_name_repeats(backend):
    ids = submit(backend, 7, publish=1)
    backend.update_transfers([TransferUpdate(i, "DONE") for i in ids[:6]])
    assert backend.acquire_publication() == 6
    backend.update_publication([PublicationUpdate(ids[0], "DONE", block_name="/a/b/USER#1")])
    block = [PublicationUpdate(i, "DONE", block_name="/a/b/USER#1") for i in ids]
    # ids[6] is still NEW: DONE cannot follow, so nothing of the batch is applied
    with pytest.raises(TransitionError) as err:
        backend.update_publication(block)
    assert err.value.row_id == ids[6]
    assert {r["tm_publication_state"] for r in backend.get_transfers(ids[1:6])} == {"ACQUIRED"}
    result = backend.update_publication(block[:6])
    assert sorted(result.updated) == sorted(ids[1:6])
    assert result.skipped == [{"id": ids[0], "state": "DONE", "reason": "already DONE"}]
    got = backend.get_transfers(ids[:6])
    assert {(r["tm_publication_state"], r["tm_dbs_blockname"]) for r in got} == {("DONE", "/a/b/USER#1")}


def test_statistics_and_listing(backend):
    backend.inject([request(i) for i in range(3)] + [request(i, user="bob", task="task_b") for i in range(2)])
    stats = backend.statistics()
    assert {(s["username"], s["taskname"], s["transfer_state"], s["count"]) for s in stats} == {
        ("alice", "task_a", "NEW", 3), ("bob", "task_b", "NEW", 2)}
    assert len(backend.statistics(user="bob")) == 1
    assert len(backend.list_transfers(task="task_b")) == 2
    assert len(backend.list_transfers(user="alice", limit=2)) == 2
    assert backend.list_transfers(states=["DONE"]) == []


def test_tasks_and_metadata(backend):
    backend.upsert_tasks([{"tm_taskname": "task_z", "tm_username": "alice", "tm_publish_name": "/Prim/alice-proc/USER"}])
    backend.upsert_tasks([{"tm_taskname": "task_z", "tm_username": "alice", "tm_task_status": "COMPLETED"}])
    task = backend.get_task("task_z")
    assert task["tm_task_status"] == "COMPLETED" and task["tm_publish_name"] == "/Prim/alice-proc/USER"
    assert task["tm_last_publication"] is None
    backend.update_last_publication("task_z", 1_700_000_123)
    assert backend.get_task("task_z")["tm_last_publication"] == 1_700_000_123
    assert backend.get_task("nosuch") is None
    lfn = "/store/user/alice/task_z/f.root"
    backend.put_file_metadata([{"lfn": lfn, "taskname": "task_z", "metadata": {"inevents": 10, "runlumi": {"1": [1, 2]}}}])
    backend.put_file_metadata([{"lfn": lfn, "taskname": "task_z", "metadata": {"inevents": 11}}])
    assert backend.get_file_metadata([lfn, "/store/none"]) == {lfn: {"inevents": 11}}


def test_bulk_batch(backend):
    n = 1200  # over the store's IN-list chunk, so chunking is exercised
    backend.inject([request(i) for i in range(n)])
    assert backend.acquire_transfers(["alice"], n) == n
    rows = backend.acquired_transfers(limit=n)
    result = backend.update_transfers([TransferUpdate(r["tm_id"], "SUBMITTED", fts_id=f"job-{k % 7}") for k, r in enumerate(rows)])
    assert len(result.updated) == n
    assert len(backend.get_transfers([r["tm_id"] for r in rows])) == n


def test_values_longer_than_their_columns_are_refused(backend):
    ids = submit(backend, 1)
    with pytest.raises(ValidationError) as err:
        backend.update_transfers([TransferUpdate(ids[0], "DONE", fts_id="j" * 300)])
    assert err.value.field == "list_of_fts_id[0]"
    with pytest.raises(ValidationError) as err:
        backend.upsert_tasks([{"tm_taskname": "task_a", "tm_username": "alice", "tm_task_status": "S" * 80}])
    assert err.value.field == "tasks[0].tm_task_status"
    assert state_of(backend, ids[0]) == "SUBMITTED"


def test_rows_injected_for_a_worker_are_acquired_by_that_worker_only(make_backend):
    a, b = make_backend("worker-a"), make_backend("worker-b")
    a.inject([request(0, "wendy", asoworker="worker-a"), request(1, "wendy", asoworker="worker-b"), request(2, "wendy")])
    assert a.active_users() == ["wendy"]
    assert a.acquire_transfers(["wendy"], 10) == 2
    assert ids_of(a.acquired_transfers()) == ids_of([{"tm_id": lfn_id(request(i, "wendy")["source_lfn"])} for i in (0, 2)])
    assert b.acquire_transfers(["wendy"], 10) == 1
    assert b.acquired_transfers()[0]["tm_source_lfn"].endswith("file_1.root")


def test_max_retry_default_given_and_zero(backend):
    backend.inject([request(0, "mia"), request(1, "mia", max_retry=0), request(2, "mia", max_retry=5)])
    rows = {r["tm_source_lfn"][-6:]: r for r in backend.list_transfers(user="mia")}
    assert rows["0.root"]["tm_transfer_max_retry_count"] == 3  # docs/configuration.md's [transfer] max_retry
    assert rows["1.root"]["tm_transfer_max_retry_count"] == 0  # 0 is a value, not "missing"
    assert rows["2.root"]["tm_transfer_max_retry_count"] == 5


def test_configured_max_retry_is_what_injection_stores(tmp_path):
    from aso.config import from_dict
    from aso.state import backend_from_config

    config = from_dict({"state": {"url": f"sqlite:///{tmp_path / 's.db'}"}, "transfer": {"max_retry": 7},
                        "publisher": {"max_retry": 4}})
    backend = backend_from_config(config)
    backend.inject([request(0, "noah")])
    row = backend.list_transfers(user="noah")[0]
    assert (row["tm_transfer_max_retry_count"], row["tm_publication_max_retry_count"]) == (7, 4)
    backend.close()


def test_submission_records_a_multihop_path_and_a_direct_one_clears_it(backend):
    backend.inject([request(i) for i in range(2)])
    backend.acquire_transfers(["alice"], 10)
    a, b = (r["tm_id"] for r in backend.acquired_transfers(user="alice"))
    backend.update_transfers([
        TransferUpdate(a, "SUBMITTED", fts_id="job-1", fts_instance="https://fts:8446", path="T2_XX_Source>T2_ZZ_Hop>T2_YY_Dest"),
        TransferUpdate(b, "SUBMITTED", fts_id="job-2", fts_instance="https://fts:8446"),
    ])
    rows = {r["tm_id"]: r for r in backend.get_transfers([a, b])}
    assert rows[a]["tm_path"] == "T2_XX_Source>T2_ZZ_Hop>T2_YY_Dest" and rows[b]["tm_path"] is None
    # a failed multi-hop attempt keeps its path on the row; the next, direct, submission clears it
    backend.update_transfers([TransferUpdate(a, "RETRY", reason="hop 2 failed")])
    assert backend.get_transfers([a])[0]["tm_path"] == "T2_XX_Source>T2_ZZ_Hop>T2_YY_Dest"
    time.sleep(2)  # whole-second times: the cool-off of 0 s must have passed
    assert backend.retry_transfers(0) == 1
    backend.acquire_transfers(["alice"], 10)
    backend.update_transfers([TransferUpdate(a, "SUBMITTED", fts_id="job-3", fts_instance="https://fts:8446")])
    assert backend.get_transfers([a])[0]["tm_path"] is None


@pytest.mark.parametrize("path", ["T2_A", "T2_A>../x", "A>" * 300 + "B", "T2_A>>T2_B"])
def test_a_path_that_is_not_sites_is_refused(backend, path):
    backend.inject([request(0)])
    backend.acquire_transfers(["alice"], 10)
    row_id = backend.acquired_transfers(user="alice")[0]["tm_id"]
    with pytest.raises(ValidationError) as err:
        backend.update_transfers([TransferUpdate(row_id, "SUBMITTED", fts_id="j", fts_instance="https://f", path=path)])
    assert "list_of_path[0]" in str(err.value)
    assert state_of(backend, row_id) == "ACQUIRED"


def test_a_v1_database_gains_the_path_column(tmp_path):
    import sqlite3

    from aso.state.store import Store
    from tests.state.migrations import rewound_database

    url = rewound_database(tmp_path / "old.db", 1, "DROP INDEX ix_ftdb_inflight",
                           "ALTER TABLE filetransfersdb DROP COLUMN tm_path")
    store = Store(url)
    try:
        with sqlite3.connect(tmp_path / "old.db") as db:
            columns = {r[1] for r in db.execute("PRAGMA table_info(filetransfersdb)")}
            indexes = {r[1] for r in db.execute("PRAGMA index_list(filetransfersdb)")}
        assert "tm_path" in columns and "ix_ftdb_inflight" in indexes
    finally:
        store.close()


def test_acquired_publication_pages_by_user(backend):
    for user, n in (("bob", 2), ("alice", 3), ("carol", 1)):
        ids = submit(backend, n, user=user, task=f"task_{user}", publish=1)
        backend.update_transfers([TransferUpdate(i, "DONE") for i in ids])
    assert backend.acquire_publication() == 6
    users = [r["tm_username"] for r in backend.acquired_publication()]
    assert users == ["alice"] * 3 + ["bob"] * 2 + ["carol"]
    assert [r["tm_username"] for r in backend.acquired_publication(after_user="alice")] == ["bob"] * 2 + ["carol"]
    assert [r["tm_username"] for r in backend.acquired_publication(limit=1, after_user="bob")] == ["carol"]
    assert backend.acquired_publication(after_user="carol") == []
    with pytest.raises(ValidationError) as err:
        backend.acquired_publication(after_user="../x")
    assert "after_username" in str(err.value)


def test_a_v6_database_gets_the_publishers_index_by_user(tmp_path):
    import sqlite3

    from aso.state.store import Store
    from tests.state.migrations import rewound_database

    url = rewound_database(tmp_path / "old.db", 6, "DROP INDEX ix_ftdb_worker_pstate_user",
                           "CREATE INDEX ix_ftdb_worker_pstate ON filetransfersdb (tm_aso_worker, tm_publication_state)")
    Store(url).close()
    with sqlite3.connect(tmp_path / "old.db") as db:
        indexes = {r[1] for r in db.execute("PRAGMA index_list(filetransfersdb)")}
        plan = " ".join(r[-1] for r in db.execute(
            "EXPLAIN QUERY PLAN SELECT tm_id FROM filetransfersdb WHERE tm_publication_state = 1 "
            "AND tm_aso_worker = 'w' AND tm_transfer_state = 3 AND tm_username > 'alice' "
            "ORDER BY tm_username, tm_taskname, tm_end_time, tm_id LIMIT 10"))
    assert "ix_ftdb_worker_pstate_user" in indexes and "ix_ftdb_worker_pstate" not in indexes
    # a page is a seek in user order, not a sort of every acquired row
    assert "ix_ftdb_worker_pstate_user" in plan and "tm_username>?" in plan.replace(" ", ""), plan
