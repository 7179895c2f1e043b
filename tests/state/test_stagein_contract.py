"""Stage-in requests and the request-type split of acquisition, on SQLite, PostgreSQL and REST:
aso transfer ('transfer') never sees a stage-in row, aso stager ('stagein') sees only them."""

from __future__ import annotations

import pytest
import requests

from aso.errors import ValidationError
from aso.state.requests import request_type, transfer_row
from aso.topology.throttle import ThrottleLimits
from tests.state.servers import start_state_server
from tests.state.test_contract import request

TAPE = "T1_XX_Tape"


def stagein(i: int, user: str = "alice", **extra) -> dict:
    lfn = f"/store/user/{user}/tape/file_{i}.root"
    return {**request(i, user, "task_stage"), "source": TAPE, "destination": TAPE, "source_lfn": lfn,
            "destination_lfn": lfn, "type": "stagein", **extra}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"destination": "T2_YY_Dest"}, "[0].destination"),
        ({"destination_lfn": "/store/user/alice/tape/other.root"}, "[0].destination_lfn"),
        ({"publish": 1}, "[0].publish"),
        ({"type": "stage-in"}, "[0].type"),
    ],
)
def test_a_stagein_stages_one_file_in_place(change, field):
    with pytest.raises(ValidationError) as err:
        transfer_row(0, {**stagein(0), **change}, 0)
    assert err.value.field == field


def test_a_stagein_row_keeps_its_type_and_nothing_to_publish():
    row = transfer_row(0, stagein(0), 0)
    assert row["tm_type"] == "stagein" and row["tm_publication_state"] == 5  # NOT_REQUIRED


@pytest.mark.parametrize("value", ["output", "STAGEIN", "all", 3])
def test_request_type_is_transfer_or_stagein(value):
    with pytest.raises(ValidationError, match="request_type: expected 'transfer' or 'stagein'"):
        request_type(value)
    assert request_type(None) is None and request_type("stagein") == "stagein"


def test_acquisition_is_split_by_request_type(backend):
    backend.inject([request(i, "alice") for i in range(3)] + [stagein(i, "alice") for i in range(2)]
                   + [stagein(i, "bob") for i in range(2)] + [request(i, "carol", type="log") for i in range(1)])
    assert backend.active_users(request_type="transfer") == ["alice", "carol"]
    assert backend.active_users(request_type="stagein") == ["alice", "bob"]
    assert backend.active_users() == ["alice", "bob", "carol"]  # no filter: every kind, as before
    # the transfer pass takes its rows only, unthrottled and throttled alike
    assert backend.acquire_transfers(["alice", "bob", "carol"], 100, request_type="transfer") == 4
    got = backend.acquired_transfers(request_type="transfer")
    assert sorted(r["tm_type"] for r in got) == ["log", "output", "output", "output"]
    assert backend.acquired_transfers(request_type="stagein") == []
    assert backend.active_users(request_type="stagein") == ["alice", "bob"]
    # the stager, throttled or not, takes only stage-ins
    limits = ThrottleLimits(outgoing={TAPE: 100})
    assert backend.acquire_transfers(["alice"], 100, limits, request_type="stagein") == 2
    assert backend.acquire_transfers(["bob"], 1, request_type="stagein") == 1
    staged = backend.acquired_transfers(request_type="stagein")
    assert len(staged) == 3 and {r["tm_type"] for r in staged} == {"stagein"}
    assert len(backend.acquired_transfers(user="alice", request_type="stagein")) == 2
    assert len(backend.acquired_transfers()) == 7  # unfiltered: both kinds


def test_request_type_over_rest_is_checked_and_documented(tmp_path):
    service, url = start_state_server(tmp_path)
    try:
        base = f"{url}/crabserver/test/filetransfers"
        auth = {"Authorization": "Bearer service-token"}
        for method, sub in (("get", "activeUsers"), ("get", "acquiredTransfers"), ("post", "acquireTransfers")):
            params = {"subresource": sub, "asoworker": "w", "request_type": "tape"}
            answer = (requests.get(base, params=params, headers=auth, timeout=10) if method == "get"
                      else requests.post(base, data=params, headers=auth, timeout=10))
            assert answer.status_code == 400, (sub, answer.text)
            assert answer.json()["field"] == "request_type"
        ok = requests.get(base, params={"subresource": "activeUsers", "asoworker": "w", "request_type": "stagein"},
                          headers=auth, timeout=10)
        assert ok.status_code == 200 and ok.json()["result"] == []
        spec = requests.get(f"{url}/crabserver/test/openapi.json", headers=auth, timeout=10).json()
        text = str(spec)
        assert "request_type" in text and "stagein" in text
    finally:
        service.stop()


def test_a_user_stages_in_only_their_own_stored_files(tmp_path):
    service, url = start_state_server(tmp_path)
    try:
        base = f"{url}/crabserver/test/fileusertransfers"
        alice = {"Authorization": "Bearer alice-token"}
        mine = requests.put(base, json=[stagein(0)], headers=alice, timeout=10)
        assert mine.status_code == 200, mine.text
        other = {**stagein(1), "source_lfn": "/store/user/bob/f.root", "destination_lfn": "/store/user/bob/f.root"}
        refused = requests.put(base, json=[other], headers=alice, timeout=10)
        assert refused.status_code == 403 and "destination_lfn" in refused.text
    finally:
        service.stop()
