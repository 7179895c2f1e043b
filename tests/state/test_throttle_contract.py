"""Throttled acquisition and the throttling counts, on SQLite, PostgreSQL and REST."""

from __future__ import annotations

from collections import Counter

import pytest
import requests

from aso.state import TransferUpdate
from aso.topology.throttle import ThrottleLimits
from tests.state.servers import start_state_server
from tests.state.test_contract import request


def rows_to(user: str, destination: str, n: int, start: int = 0) -> list[dict]:
    return [request(i, user, f"task_{user}_{destination}", destination=destination) for i in range(start, start + n)]


def acquired_by_group(backend) -> Counter:
    return Counter((r["tm_username"], r["tm_source"], r["tm_destination"]) for r in backend.acquired_transfers())


def test_acquisition_under_limits_takes_what_they_allow_oldest_first(backend):
    backend.inject(rows_to("alice", "T2_B", 10) + rows_to("alice", "T2_C", 10) + rows_to("bob", "T2_B", 10))
    order = {r["tm_id"]: i for i, r in enumerate(backend.list_transfers(states=["NEW"]))}  # oldest first
    limits = ThrottleLimits(incoming={"T2_B": 6}, links={("T2_XX_Source", "T2_C"): 4})
    taken = backend.acquire_transfers(["alice", "bob"], 100, limits)
    assert taken == 10 and taken.held == 20
    got = acquired_by_group(backend)
    assert got == {("alice", "T2_XX_Source", "T2_B"): 3, ("bob", "T2_XX_Source", "T2_B"): 3,
                   ("alice", "T2_XX_Source", "T2_C"): 4}
    # the oldest rows of each group
    rows = backend.list_transfers()
    for group in got:
        mine = sorted((r for r in rows if (r["tm_username"], r["tm_source"], r["tm_destination"]) == group),
                      key=lambda r: order[r["tm_id"]])
        states = [r["tm_transfer_state"] for r in mine]
        assert states == ["ACQUIRED"] * got[group] + ["NEW"] * (len(mine) - got[group])
    # full: nothing more, until files land
    assert backend.acquire_transfers(["alice", "bob"], 100, limits) == 0
    done = [r["tm_id"] for r in backend.acquired_transfers(user="bob")][:2]
    backend.update_transfers([TransferUpdate(i, "SUBMITTED", fts_id="j", fts_instance="https://f") for i in done])
    assert backend.acquire_transfers(["alice", "bob"], 100, limits) == 0  # SUBMITTED is in flight too
    backend.update_transfers([TransferUpdate(i, "DONE") for i in done])
    assert backend.acquire_transfers(["alice", "bob"], 100, limits) == 2
    got = acquired_by_group(backend)  # the freed room goes to bob, who holds less of T2_B
    assert (got[("alice", "T2_XX_Source", "T2_B")], got[("bob", "T2_XX_Source", "T2_B")]) == (3, 3)


def test_limits_count_every_workers_files_and_the_per_user_limit_still_holds(make_backend):
    a, b = make_backend("worker-a"), make_backend("worker-b")
    a.inject(rows_to("alice", "T2_B", 10) + rows_to("bob", "T2_B", 10))
    assert a.acquire_transfers(["alice", "bob"], 2) == 4  # no limits: the old path
    limits = ThrottleLimits(incoming={"T2_B": 7})
    assert b.acquire_transfers(["alice", "bob"], 100, limits) == 3
    assert b.acquire_transfers(["alice", "bob"], 100, ThrottleLimits(incoming={"T2_B": 100})) == 13
    assert b.acquire_transfers(["alice"], 100, ThrottleLimits()) == 0  # empty limits: the old path


def test_per_user_limit_under_limits(backend):
    backend.inject(rows_to("alice", "T2_B", 10) + rows_to("alice", "T2_C", 10))
    taken = backend.acquire_transfers(["alice"], 7, ThrottleLimits(incoming={"T2_B": 5}))
    assert taken == 7 and acquired_by_group(backend)[("alice", "T2_XX_Source", "T2_B")] == 5


def test_throttle_counts(backend):
    backend.inject(rows_to("alice", "T2_B", 4) + rows_to("bob", "T2_C", 3))
    backend.acquire_transfers(["alice"], 3)
    counts = backend.throttle_counts()
    assert counts.inflight == {("alice", "T2_XX_Source", "T2_B"): 3}
    assert counts.waiting == {("alice", "T2_XX_Source", "T2_B"): 1, ("bob", "T2_XX_Source", "T2_C"): 3}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    service, url = start_state_server(tmp_path_factory.mktemp("throttle-server"))
    yield url
    service.stop()


def _post(url: str, body, token: str = "service-token", form: bool = False):
    kwargs = {"data": body} if form else {"json": body}
    return requests.post(f"{url}/crabserver/test/filetransfers", headers={"Authorization": f"Bearer {token}"},
                         timeout=30, **kwargs)


@pytest.mark.parametrize(("limits", "field"), [
    ({"links": [{"source": "A", "destination": "B", "max_files": 1}, {"source": "A", "destination": "C", "max_files": 1},
                {"source": "A", "destination": "D", "max_files": "many"}]}, "limits.links[2].max_files"),
    ({"incoming": [{"site": "../x", "max_files": 1}]}, "limits.incoming[0].site"),
    ({"fair_share": 1}, "limits.fair_share"),
    ([1, 2], "limits"),
    ("{not json", "limits"),
])
def test_rest_refuses_bad_limits_naming_the_field(server, limits, field):
    answer = _post(server, {"subresource": "acquireTransfers", "asoworker": "w", "username": ["alice"], "limits": limits})
    assert answer.status_code == 400, answer.text
    assert answer.json()["field"] == field


def test_rest_takes_limits_in_a_form_body_too_and_counts_are_for_staff_only(server):
    answer = _post(server, {"subresource": "acquireTransfers", "asoworker": "w", "username": "alice",
                            "limits": '{"incoming": [{"site": "T2_B", "max_files": 2}]}'}, form=True)
    assert answer.status_code == 200 and answer.json()["result"][0] == {"modified": 0, "held": 0}
    for token, status in (("service-token", 200), ("operator-token", 200), ("alice-token", 403)):
        got = requests.get(f"{server}/crabserver/test/filetransfers", params={"subresource": "throttleCounts"},
                           headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert got.status_code == status, got.text


@pytest.mark.parametrize("fair_share", [True, False])
def test_a_late_small_user_is_not_starved_by_an_early_big_one(backend, fair_share):
    limits = ThrottleLimits(incoming={"T2_B": 50}, fair_share=fair_share)
    backend.inject(rows_to("alice", "T2_B", 1000))
    assert backend.acquire_transfers(["alice"], 10000, limits) == 50
    backend.inject(rows_to("bob", "T2_B", 10))
    # ten of alice's files land: the room they free goes to bob's files, not alice's older ones
    landed = [r["tm_id"] for r in backend.acquired_transfers(user="alice")][:10]
    backend.update_transfers([TransferUpdate(i, "SUBMITTED", fts_id="j", fts_instance="https://f") for i in landed])
    backend.update_transfers([TransferUpdate(i, "DONE") for i in landed])
    assert backend.acquire_transfers(["alice", "bob"], 10000, limits) == 10
    bob = acquired_by_group(backend)[("bob", "T2_XX_Source", "T2_B")]
    assert bob == (10 if fair_share else 0)  # without fair share: oldest rows first, alice's
