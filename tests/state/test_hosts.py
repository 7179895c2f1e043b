"""Several hosts on one state backend (sqlite, postgres, rest): heartbeats, membership,
takeover of a silent worker's rows, generation fencing and the owner guard of updates."""

from __future__ import annotations

import os
import time

import pytest

from aso.errors import FencedError, ForbiddenError, ValidationError
from aso.state import PublicationUpdate, TransferUpdate, open_backend
from aso.state.records import Heartbeat
from aso.state.shares import owner
from tests.state.servers import start_state_server
from tests.state.test_contract import request

USERS = ["alice", "bob", "carol", "dave", "erin", "frank"]


def beat(backend, component: str = "transfer", timeout: int = 600, host: str | None = None, pid: int | None = None):
    return backend.heartbeat(Heartbeat(host or f"{backend.worker}.example", component, pid or os.getpid(),
                                       time.time(), timeout))


def workers_of(backend, ids):
    return {r["tm_id"]: r["tm_aso_worker"] for r in backend.get_transfers(ids)}


def test_heartbeats_answer_generation_and_live_workers_and_instances_list_them(make_backend):
    a, b = make_backend("host-a"), make_backend("host-b")
    first = beat(a)
    assert (first.worker, first.generation, first.live, first.taken_over) == ("host-a", 1, ["host-a"], [])
    assert a.generation == 1 and a.membership == first
    assert beat(b).live == ["host-a", "host-b"]
    assert beat(b, "monitor").live == ["host-b"]  # per component
    listed = {(i.worker, i.component): i for i in a.instances(600)}
    assert set(listed) == {("host-a", "transfer"), ("host-b", "transfer"), ("host-b", "monitor")}
    assert all(i.live and i.state == "live" and i.generation == 1 for i in listed.values())
    assert listed[("host-a", "transfer")].host == "host-a.example"


def test_a_silent_worker_is_taken_over_once_and_its_unfinished_rows_follow_the_share(make_backend):
    a, b, c = make_backend("host-a"), make_backend("host-b"), make_backend("host-c")
    a.inject([request(i, user) for user in USERS for i in range(4)]
             + [request(i, "alice", "task_p", publish=1) for i in range(10, 13)])
    beat(a, timeout=2)
    assert a.acquire_transfers(USERS, 1000) == len(USERS) * 4 + 3
    rows = {r["tm_id"]: r for r in a.acquired_transfers(limit=1000)}
    ids = sorted(rows)
    # a mix of what a host leaves behind: submitted, retrying, finished, and published rows
    pub = [i for i in ids if rows[i]["tm_taskname"] == "task_p"]
    plain = [i for i in ids if i not in pub]
    submitted, failed = plain[:8], plain[8:10]
    a.update_transfers([TransferUpdate(i, "SUBMITTED", fts_id="job-1", fts_instance="https://fts:8446") for i in submitted + pub])
    a.update_transfers([TransferUpdate(i, "FAILED", reason="no") for i in failed]
                       + [TransferUpdate(i, "DONE") for i in pub])
    assert a.acquire_publication() == 3
    a.update_publication([PublicationUpdate(pub[0], "DONE")])
    time.sleep(1.0)
    beat(b, timeout=2)  # b is live; a is silent for 1 s, not dead yet
    time.sleep(1.2)
    beat(c, timeout=2)  # a is silent for 2.2 s: c takes it over, for the live b and c
    membership = beat(b, timeout=2)
    assert membership.taken_over == []  # c did it already: one takeover only
    again = {i.worker: i for i in b.instances(2)}
    assert again["host-a"].state == "taken-over" and again["host-a"].taken_over_by == "host-c"
    assert again["host-a"].generation == 2 and not again["host-a"].live
    now = workers_of(b, ids)
    finished = set(failed) | {pub[0]}
    assert all(now[i] == "host-a" for i in finished)  # finished rows stay where they were
    for i in set(ids) - finished:
        assert now[i] == owner(rows[i]["tm_username"], ["host-b", "host-c"]), i
    assert {now[i] for i in set(ids) - finished} == {"host-b", "host-c"}
    # a publication host-a had acquired goes back to NEW for its new owner's publisher
    states = {r["tm_id"]: r["tm_publication_state"] for r in b.get_transfers(pub)}
    assert states == {pub[0]: "DONE", pub[1]: "NEW", pub[2]: "NEW"}


def test_the_takeover_answer_says_what_moved(make_backend):
    a, b = make_backend("host-a"), make_backend("host-b")
    a.inject([request(i, user) for user in ("alice", "bob") for i in range(3)])
    beat(a, timeout=1)
    a.acquire_transfers(["alice", "bob"], 1000)
    time.sleep(1.2)
    (taken,) = beat(b, timeout=1).taken_over
    assert taken.as_dict() == {"worker": "host-a", "by": "host-b", "generation": 2, "rows": 6, "users": 2}
    assert len(b.acquired_transfers(limit=100)) == 6


def test_a_fenced_worker_writes_nothing_then_rejoins_without_its_old_rows(make_backend):
    a, b = make_backend("host-a"), make_backend("host-b")
    a.inject([request(i) for i in range(4)] + [request(9, "bob")])
    beat(a, timeout=1)
    a.acquire_transfers(["alice"], 1000)
    ids = sorted(r["tm_id"] for r in a.acquired_transfers())
    time.sleep(1.2)
    beat(b, timeout=1)
    # host-a wakes up mid-pass: every pipeline write with its old generation is refused
    for write in (lambda: a.update_transfers([TransferUpdate(ids[0], "SUBMITTED", fts_id="j", fts_instance="f")]),
                  lambda: a.acquire_transfers(["bob"], 10),
                  lambda: a.release_transfers(ids),
                  lambda: a.retry_transfers(0),
                  lambda: a.acquire_publication(),
                  lambda: a.set_submission_ids({ids[0]: "sid-1"})):
        with pytest.raises(FencedError) as err:
            write()
        assert "generation" in str(err.value)
    assert set(workers_of(b, ids).values()) == {"host-b"}
    assert {r["tm_transfer_state"] for r in b.get_transfers(ids)} == {"ACQUIRED"}
    # it heartbeats again: live, with the current generation; the rows stay host-b's
    rejoined = beat(a, timeout=600)
    assert rejoined.generation == 2 and rejoined.live == ["host-a", "host-b"]
    assert {i.worker: i.state for i in a.instances(600)}["host-a"] == "live"
    result = a.update_transfers([TransferUpdate(ids[0], "SUBMITTED", fts_id="j", fts_instance="f")])
    assert result.updated == [] and result.skipped == [{"id": ids[0], "state": "ACQUIRED", "reason": "owned by host-b"}]
    assert a.acquired_transfers() == []


def test_no_generation_no_fence_and_a_stale_process_row_is_dropped(make_backend):
    a = make_backend("host-a")
    a.inject([request(0)])
    # a caller that never heartbeats is not fenced (old callers, tools)
    assert a.acquire_transfers(["alice"], 10) == 1
    beat(a, timeout=1, host="h.example", pid=100)
    time.sleep(1.2)
    beat(a, timeout=1, host="h.example", pid=101)  # the process was restarted
    assert [(i.host, i.pid) for i in a.instances(600)] == [("h.example", 101)]


def test_acquisition_of_other_workers_shares_takes_only_pinned_rows(make_backend):
    a = make_backend("host-a")
    a.inject([request(0, "alice"), request(1, "bob"), request(2, "bob", asoworker="host-a"), request(3, "carol")])
    assert a.acquire_transfers(["alice"], 10, pinned_only=["bob", "carol"]) == 2
    assert sorted((r["tm_username"], r["tm_job_retry_count"]) for r in a.acquired_transfers()) == [("alice", 0), ("bob", 0)]
    assert {r["tm_username"] for r in a.list_transfers(states=["NEW"])} == {"bob", "carol"}
    # none of the users in this worker's share: only what is pinned to it
    a.inject([request(4, "dave"), request(5, "dave", asoworker="host-a")])
    assert a.acquire_transfers([], 10, pinned_only=["bob", "carol", "dave"]) == 1
    assert {r["tm_username"] for r in a.list_transfers(states=["NEW"])} == {"bob", "carol", "dave"}


def test_a_chunks_submission_id_goes_only_to_its_rows_still_acquired_by_this_worker(make_backend):
    # a chunk big enough to take its sid in one statement, and one too small for that
    a, b = make_backend("host-a"), make_backend("host-b")
    a.inject([request(i) for i in range(8)] + [request(i, "bob") for i in range(8, 10)])
    a.acquire_transfers(["alice"], 10)
    b.acquire_transfers(["bob"], 10)
    ids = sorted(r["tm_id"] for r in a.acquired_transfers())
    theirs = sorted(r["tm_id"] for r in b.acquired_transfers())
    a.request_kill(ids=[ids[1]])  # killed after planning: no longer ACQUIRED
    sids = {i: "sid-big" for i in ids[:6]} | {theirs[0]: "sid-big"} | {ids[6]: "sid-small", theirs[1]: "sid-small"}
    assert a.set_submission_ids(sids) == 6
    got = {r["tm_id"]: r["tm_sid"] for r in a.get_transfers(ids + theirs)}
    assert got == {**{i: "sid-big" for i in ids[:6] if i != ids[1]}, ids[1]: None, ids[6]: "sid-small",
                   ids[7]: None, theirs[0]: None, theirs[1]: None}


def test_submission_ids_and_the_jobs_of_submitted_rows(make_backend):
    a, b = make_backend("host-a"), make_backend("host-b")
    a.inject([request(i) for i in range(4)])
    a.acquire_transfers(["alice"], 10)
    ids = sorted(r["tm_id"] for r in a.acquired_transfers())
    assert a.set_submission_ids({ids[0]: "sid-1", ids[1]: "sid-1", ids[2]: "sid-2"}) == 3
    assert b.set_submission_ids({ids[3]: "sid-3"}) == 0  # not b's row
    assert [r["tm_sid"] for r in a.get_transfers(ids)] == ["sid-1", "sid-1", "sid-2", None]
    with pytest.raises(ValidationError) as err:
        a.set_submission_ids({ids[3]: "../x"})
    assert "list_of_sid" in str(err.value)
    a.update_transfers([TransferUpdate(i, "SUBMITTED", fts_id=f"job-{i[:4]}" if i != ids[1] else f"job-{ids[0][:4]}",
                                       fts_instance="https://fts:8446") for i in ids[:3]])
    assert a.submitted_jobs() == sorted({("alice", f"job-{i[:4]}", "https://fts:8446") for i in (ids[0], ids[2])})
    assert b.submitted_jobs() == []
    assert sorted(r["tm_id"] for r in a.transfers_of_jobs([f"job-{ids[0][:4]}"])) == ids[:2]
    # acquiring again (after a retry) plans afresh: the old sid is cleared
    a.update_transfers([TransferUpdate(ids[0], "RETRY", reason="x")])
    time.sleep(1.1)  # the cool-off counts whole seconds
    assert a.retry_transfers(0) == 1
    a.acquire_transfers(["alice"], 10)
    assert a.get_transfers([ids[0]])[0]["tm_sid"] is None


@pytest.mark.parametrize(("field", "change"), [
    ("timeout", {"timeout": 0}),
    ("timeout", {"timeout": 10**9}),
    ("component", {"component": "shell"}),
    ("host", {"host": "a b"}),
    ("pid", {"pid": 2**31}),
])
def test_a_bad_heartbeat_is_refused_naming_the_field(backend, field, change):
    values = {"host": "a.example", "component": "transfer", "pid": 1, "started": time.time(), "timeout": 600}
    values.update(change)
    with pytest.raises(ValidationError) as err:
        backend.heartbeat(Heartbeat(**values))
    assert field in str(err.value)
    assert backend.instances(600) == []


def test_rest_roles_of_heartbeat_and_instances(tmp_path):
    service, url = start_state_server(tmp_path)
    clients = {token: open_backend(url, worker="host-a", token=f"{token}-token", instance="test", retries=1)
               for token in ("service", "operator", "alice")}
    try:
        beat(clients["service"])
        for token in ("alice", "operator"):  # only the service heartbeats
            with pytest.raises(ForbiddenError):
                beat(clients[token])
        with pytest.raises(ForbiddenError):
            clients["alice"].instances(600)
        assert [i.worker for i in clients["operator"].instances(600)] == ["host-a"]
        with pytest.raises(ValidationError) as err:
            clients["service"].instances(10**9)
        assert "timeout" in str(err.value)
    finally:
        for client in clients.values():
            client.close()
        service.stop()
