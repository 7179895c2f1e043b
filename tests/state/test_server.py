"""The REST server as CRAB clients and users meet it: roles, bad input, form encoding."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from aso.errors import BackendUnavailable, ForbiddenError, ValidationError
from aso.state import TransferUpdate, open_backend
from aso.validate import lfn_id
from tests.procs import free_port
from tests.state.servers import start_state_server
from tests.state.test_contract import request


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    service, url = start_state_server(tmp_path_factory.mktemp("server"))
    yield url
    service.stop()


@pytest.fixture
def api(server):
    """Raw HTTP as a CRAB client would speak it; also resets the database's rows."""
    base = f"{server}/crabserver/test"

    def call(method, resource, token="service-token", headers=None, **kwargs):
        headers = dict(headers or {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return requests.request(method, f"{base}/{resource}", headers=headers, timeout=10, **kwargs)

    return call


def backend_for(url, token, worker="worker-a"):
    return open_backend(url, worker=worker, token=token, instance="test", retries=1)


def unique(i, user="alice", task=None):
    task = task or f"t{time.time_ns()}"
    return request(i, user, task)


def test_healthz_needs_no_token(server):
    assert requests.get(f"{server}/healthz", timeout=5).json() == {"status": "ok"}


@pytest.mark.parametrize("token", [None, "wrong-token-123"])
def test_missing_or_wrong_token_is_401(api, token):
    r = api("GET", "filetransfers", token=token, params={"subresource": "activeUsers", "asoworker": "w"})
    assert r.status_code == 401
    assert "bearer token" in r.json()["error"]


def test_user_cannot_use_service_calls(api):
    r = api("POST", "filetransfers", token="alice-token", data={"subresource": "acquireTransfers", "asoworker": "w"})
    assert r.status_code == 403
    assert "alice (user) may not call filetransfers acquireTransfers" in r.json()["error"]
    r = api("POST", "filetransfers", token="operator-token", data={"subresource": "updateTransfers", "asoworker": "w"})
    assert r.status_code == 403


def test_users_see_and_kill_only_their_own_rows(server):
    alice, bob = backend_for(server, "alice-token"), backend_for(server, "bob-token")
    task = f"task{time.time_ns()}"
    mine = unique(1, "alice", task)
    alice_api = f"{server}/crabserver/test/fileusertransfers"
    r = requests.put(alice_api, json=[mine], headers={"Authorization": "Bearer alice-token"}, timeout=10)
    assert r.status_code == 200, r.text
    row_id = lfn_id(mine["source_lfn"])
    # bob cannot inject for alice
    r = requests.put(alice_api, json=[unique(2, "alice")], headers={"Authorization": "Bearer bob-token"}, timeout=10)
    assert r.status_code == 403 and "bob cannot inject transfers of alice" in r.json()["error"]
    # bob does not see alice's row, by id or by task
    r = requests.get(alice_api, params={"subresource": "getById", "id": row_id}, headers={"Authorization": "Bearer bob-token"}, timeout=10)
    assert r.json()["result"] == []
    r = requests.get(alice_api, params={"subresource": "getTransferStatus", "username": "alice", "taskname": task}, headers={"Authorization": "Bearer bob-token"}, timeout=10)
    assert r.json()["result"] == []
    # bob cannot kill it
    r = requests.post(alice_api, data={"subresource": "killTransfersById", "listOfIds": [row_id]}, headers={"Authorization": "Bearer bob-token"}, timeout=10)
    assert r.json()["result"][0]["killed"] == []
    assert r.json()["result"][0]["failedKill"][0]["reason"] == "no such transfer"
    # alice can
    r = requests.post(alice_api, data={"subresource": "killTransfers", "taskname": task}, headers={"Authorization": "Bearer alice-token"}, timeout=10)
    assert r.json()["result"][0]["killed"] == [row_id]
    service = backend_for(server, "service-token")
    assert service.get_transfers([row_id])[0]["tm_transfer_state"] == "KILL"
    with pytest.raises(ForbiddenError):
        alice.acquire_transfers(["alice"], 10)
    bob.close()
    alice.close()


def test_crab_form_encoded_update_with_repeated_keys(api, server):
    service = backend_for(server, "service-token", worker="crabworker")
    task = f"task{time.time_ns()}"
    service.inject([request(i, "carol", task) for i in range(3)])
    r = api("POST", "filetransfers", data={"subresource": "acquireTransfers", "asoworker": "crabworker", "username": "carol"})
    assert r.json()["result"][0]["modified"] == 3
    r = api("GET", "filetransfers", params={"subresource": "acquiredTransfers", "asoworker": "crabworker", "grouping": 0, "limit": 2})
    body = r.json()
    assert "tm_id" in body["desc"]["columns"] and len(body["result"]) == 2  # limit is exact
    ids = [row[body["desc"]["columns"].index("tm_id")] for row in body["result"]]
    r = api("POST", "filetransfers", data={
        "subresource": "updateTransfers", "asoworker": "crabworker",
        "list_of_ids": ids, "list_of_transfer_state": ["SUBMITTED", "SUBMITTED"],
        "list_of_fts_instance": ["https://fts:8446"] * 2, "list_of_fts_id": ["job-a", "job-a"],
    })
    assert r.status_code == 200 and r.json()["result"][0]["modified"] == 2
    rows = service.get_transfers(ids)
    assert {r["tm_fts_id"] for r in rows} == {"job-a"}
    service.close()


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"subresource": "updateTransfers", "asoworker": "w", "list_of_ids": ["x"], "list_of_transfer_state": ["DONE"]}, "list_of_ids[0]"),
        ({"subresource": "updateTransfers", "asoworker": "w", "list_of_ids": ["a" * 56], "list_of_transfer_state": ["FINISHED"]}, "list_of_transfer_state[0]"),
        ({"subresource": "updateTransfers", "asoworker": "w", "list_of_ids": ["a" * 56, "b" * 56], "list_of_transfer_state": ["DONE"]}, "list_of_transfer_state"),
        ({"subresource": "updateTransfers", "asoworker": "w", "list_of_ids": ["a" * 56]}, "list_of_transfer_state"),
        ({"subresource": "acquireTransfers"}, "asoworker"),
        ({"subresource": "acquireTransfers", "asoworker": "bad worker!"}, "asoworker"),
        ({"subresource": "acquireTransfers", "asoworker": "w", "username": "../etc"}, "users[0]"),
        ({"subresource": "retryTransfers", "asoworker": "w", "time_to": "soon"}, "time_to"),
        ({"subresource": "nosuch", "asoworker": "w"}, "subresource"),
    ],
)
def test_bad_input_is_400_naming_the_field(api, data, field):
    r = api("POST", "filetransfers", data=data)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"source_lfn": "relative/path.root"}, "[1].source_lfn"),
        ({"destination_lfn": "/store/user/../../etc"}, "[1].destination_lfn"),
        ({"username": "al ice"}, "[1].username"),
        ({"filesize": "big"}, "[1].filesize"),
        ({"publish": 7}, "[1].publish"),
        ({"checksum": "md5:1234"}, "[1].checksum"),
        ({"transfer_state": "SUBMITTED"}, "[1].transfer_state"),
    ],
)
def test_bad_injection_writes_nothing(api, server, change, field):
    bad = {**unique(1, "dave"), **change}
    r = api("PUT", "fileusertransfers", json=[unique(0, "dave", bad["taskname"]), bad])
    assert r.status_code == 400
    assert r.json()["field"] == field
    service = backend_for(server, "service-token")
    assert service.list_transfers(task=bad["taskname"]) == []
    service.close()


@pytest.mark.parametrize("sub", [["updateTransfers"], {"a": 1}, 7])
def test_a_subresource_that_is_not_a_name_is_400(api, sub):
    # found by the API fuzzing: a list made the route lookup raise (500)
    for method, resource in (("PUT", "filemetadata"), ("POST", "filetransfers"), ("GET", "filetransfers")):
        kwargs = {"params": {"subresource": "x"}} if method == "GET" else {"json": {"subresource": sub}}
        r = api(method, resource, **kwargs)
        assert r.status_code == 400, (method, resource, r.text)
        assert r.json()["field"] == "subresource"


def test_malformed_json_and_oversized_bodies(api):
    r = api("PUT", "fileusertransfers", data="{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["field"] == "body"
    r = api("PUT", "fileusertransfers", json=[unique(0)] * 20001)
    assert r.status_code in (400, 413)


def test_body_over_the_configured_limit_is_413_and_writes_nothing(tmp_path):
    service, url = start_state_server(tmp_path, extra="max_body_bytes = 4000")
    try:
        big = [unique(i, "frank", "task_big") for i in range(30)]
        r = requests.put(f"{url}/crabserver/test/fileusertransfers", json=big, headers={"Authorization": "Bearer service-token"}, timeout=10)
        assert r.status_code == 413 and r.json()["field"] == "body"
        small = requests.put(f"{url}/crabserver/test/fileusertransfers", json=big[:2], headers={"Authorization": "Bearer service-token"}, timeout=10)
        assert small.status_code == 200
        listed = backend_for(url, "service-token").list_transfers(task="task_big")
        assert len(listed) == 2
    finally:
        service.stop()


def test_transition_refusal_is_409_with_details(server):
    service = backend_for(server, "service-token", worker="w409")
    task = f"task{time.time_ns()}"
    service.inject([request(0, "erin", task)])
    row_id = lfn_id(request(0, "erin", task)["source_lfn"])
    r = requests.post(
        f"{server}/crabserver/test/filetransfers",
        json={"subresource": "updateTransfers", "asoworker": "w409", "list_of_ids": [row_id], "list_of_transfer_state": ["DONE"]},
        headers={"Authorization": "Bearer service-token"}, timeout=10,
    )
    assert r.status_code == 409
    assert r.json() | {"error": None} == {"error": None, "row": row_id, "current": "NEW", "requested": "DONE", "kind": "transfer"}
    service.close()


def test_client_validation_errors_carry_the_field(server):
    service = backend_for(server, "service-token")
    with pytest.raises(ValidationError) as err:
        service.update_transfers([TransferUpdate("nothex", "DONE")])
    assert err.value.field == "list_of_ids[0]"
    service.close()


def test_client_retries_until_a_late_server_comes_up(tmp_path):
    port = free_port()
    backend = open_backend(f"http://127.0.0.1:{port}", worker="w", token="service-token", instance="test", retries=8, backoff=0.2)
    started = {}

    def start_late():
        time.sleep(1.0)
        started["server"] = start_state_server(tmp_path, port=port)

    thread = threading.Thread(target=start_late)
    thread.start()
    try:
        assert backend.active_users() == []
    finally:
        thread.join()
        started["server"][0].stop()
    down = open_backend(f"http://127.0.0.1:{free_port()}", worker="w", token="t", retries=2, backoff=0.05)
    with pytest.raises(BackendUnavailable, match="unreachable after 2 attempts"):
        down.active_users()


def test_gunicorn_serves_the_app_with_several_workers(tmp_path):
    """The documented multi-process deployment: gunicorn workers sharing one database."""
    import shutil

    from tests.procs import Service
    from tests.state.servers import write_server_config

    config = write_server_config(tmp_path)
    port = free_port()
    gunicorn = shutil.which("gunicorn")
    assert gunicorn, "gunicorn is part of the 'server' extra"
    with Service(
        [gunicorn, "-w", "2", "-b", f"127.0.0.1:{port}", "aso.state.server:app_from_env()"],
        port, tmp_path / "gunicorn.log", env={"ASO_CONFIG": str(config)},
    ):
        backend = backend_for(f"http://127.0.0.1:{port}", "service-token")
        backend.inject([request(i, "gina", "task_g") for i in range(50)])
        # Several requests, likely spread over both workers, see one database.
        counts = [sum(s["count"] for s in backend.statistics(user="gina")) for _ in range(6)]
        assert counts == [50] * 6
        backend.close()
