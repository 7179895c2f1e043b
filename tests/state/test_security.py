"""The state server as a hostile user meets it: path escapes, namespaces, squatting,
existence leaks and input that used to answer 500 (issue 10's examples, each one)."""

from __future__ import annotations

import json
import time

import pytest
import requests

from aso.validate import lfn_id
from tests.state.servers import start_state_server

CRAB_TASK = "201130_101010:alice_crab_analysis"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    service, url = start_state_server(
        tmp_path_factory.mktemp("security"), extra='groups = {alice = ["higgs"]}'
    )
    yield url
    service.stop()


@pytest.fixture
def api(server):
    def call(method, resource, token="alice-token", instance="test", headers=None, **kwargs):
        headers = dict(headers or {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return requests.request(method, f"{server}/crabserver/{instance}/{resource}", headers=headers, timeout=30, **kwargs)

    return call


def row(user="alice", task=None, name=None, **extra):
    name = name or f"f{time.time_ns()}.root"
    req = {
        "username": user,
        "taskname": task or f"task_{user}_{time.time_ns()}",
        "source": "T2_A",
        "destination": "T2_B",
        "source_lfn": f"/store/temp/user/{user}.abc123/out/{name}",
        "destination_lfn": f"/store/user/{user}/out/{name}",
        "filesize": 10,
    }
    req.update(extra)
    return req


def inject(api, rows, token="alice-token"):
    return api("PUT", "fileusertransfers", token=token, json=rows)


def assert_refused(resp, status, field_or_text):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert field_or_text in (body.get("field") or "") + body["error"], body
    assert "Traceback" not in resp.text


# -- 1, 2: LFNs whose path is not what it says ----------------------------------------------
@pytest.mark.parametrize("dest", [
    "/store/user/alice/%2e%2e/%2e%2e/%2e%2e/%2e%2e/ESCAPED.root",
    "/store/user/alice/h#frag.bin",
    "/store/user/alice/q?x=1.bin",
    "/store/user/alice/a%2Fb.bin",
    "/store/user/alice/x.root/",
    "/store/user/alice/a b.root",
    "/store/user/alice/del\x7f.root",
    "/store/user/alice/nel\u0085.root",
    "/store/user/alice/ls\u2028.root",
])
def test_lfn_that_is_not_a_plain_path_is_400_naming_the_field(api, dest):
    resp = inject(api, [row(destination_lfn=dest)])
    assert_refused(resp, 400, "destination_lfn")


# -- 3: namespaces --------------------------------------------------------------------------
def test_user_may_not_write_into_another_users_area(api):
    assert_refused(inject(api, [row(destination_lfn="/store/user/bob/out/x.root")]), 403, "destination_lfn")


def test_user_may_not_inject_for_another_user(api):
    assert_refused(inject(api, [row(user="bob")]), 403, "username")


def test_user_may_write_into_a_group_area_only_as_a_member(api):
    ok = inject(api, [row(destination_lfn=f"/store/group/higgs/out/{time.time_ns()}.root")])
    assert ok.status_code == 200, ok.text
    resp = inject(api, [row(user="bob", destination_lfn="/store/group/higgs/out/b.root")], token="bob-token")
    assert_refused(resp, 403, "destination_lfn")


def test_user_may_not_add_rows_to_another_users_task(api):
    task = f"task_bob_{time.time_ns()}"
    assert inject(api, [row(user="bob", task=task)], token="bob-token").status_code == 200
    assert_refused(inject(api, [row(task=task)]), 403, "taskname")


def test_a_refused_batch_writes_nothing(api):
    good, bad = row(), row(destination_lfn="/store/user/bob/out/y.root")
    assert inject(api, [good, bad]).status_code == 403
    found = api("GET", "fileusertransfers", params={"subresource": "getById", "id": lfn_id(good["source_lfn"])})
    assert found.json()["result"] == []


def test_service_is_not_confined(api):
    resp = inject(api, [row(user="bob", destination_lfn="/store/user/alice/shared/x.root",
                            source_lfn=f"/store/temp/anything/{time.time_ns()}.root")], token="service-token")
    assert resp.status_code == 200, resp.text


def test_operator_may_not_inject_unless_configured(api, tmp_path):
    assert_refused(inject(api, [row()], token="operator-token"), 403, "operator_inject")
    service, url = start_state_server(tmp_path, extra="operator_inject = true")
    try:
        headers = {"Authorization": "Bearer operator-token"}
        ok = requests.put(f"{url}/crabserver/test/fileusertransfers", json=[row()], headers=headers, timeout=30)
        assert ok.status_code == 200, ok.text
        # on behalf of a user, but still inside that user's namespace
        bad = requests.put(f"{url}/crabserver/test/fileusertransfers", headers=headers, timeout=30,
                           json=[row(destination_lfn="/store/user/bob/x.root")])
        assert bad.status_code == 403
    finally:
        service.stop()


# -- 4: squatting ---------------------------------------------------------------------------
def test_a_user_cannot_squat_another_users_source_lfn(api):
    name = f"victim{time.time_ns()}.root"
    squat = row(user="bob", source_lfn=f"/store/temp/user/alice/{name}", destination_lfn=f"/store/user/bob/{name}")
    assert_refused(inject(api, [squat], token="bob-token"), 403, "source_lfn")
    mine = row(source_lfn=f"/store/temp/user/alice/{name}")
    resp = inject(api, [mine])
    assert resp.status_code == 200 and resp.json()["result"][0]["inserted"] == [lfn_id(mine["source_lfn"])]


def test_a_user_cannot_squat_another_users_crab_task_name(api):
    assert_refused(inject(api, [row(user="bob", task=CRAB_TASK)], token="bob-token"), 403, "taskname")
    assert inject(api, [row(task=CRAB_TASK)]).status_code == 200
    found = api("GET", "task", params={"subresource": "search", "workflow": CRAB_TASK})
    assert found.status_code == 200 and len(found.json()["result"]) == 1


def test_source_area_is_the_users_name_followed_by_slash_or_dot(api):
    # /store/temp/user/alicex is not alice's area
    assert_refused(inject(api, [row(source_lfn="/store/temp/user/alicex/a.root")]), 403, "source_lfn")


# -- 5: existence leaks ---------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/crabserver/wrong/filetransfers", "/crabserver/test/nothing", "/elsewhere"])
def test_unauthenticated_requests_learn_nothing(server, path):
    resp = requests.get(server + path, timeout=10)
    assert resp.status_code == 401
    assert "test" not in resp.json()["error"]


def test_wrong_instance_does_not_name_the_served_one(api):
    resp = api("GET", "filetransfers", instance="wrong", params={"subresource": "listTransfers"})
    assert resp.status_code == 404
    assert "'test'" not in resp.text


def test_foreign_and_unknown_rows_answer_the_same(api):
    mine = row()
    assert inject(api, [mine]).status_code == 200
    foreign, unknown = lfn_id(mine["source_lfn"]), lfn_id("/store/temp/user/nobody/none.root")
    answers = []
    for row_id in (foreign, unknown):
        resp = api("POST", "fileusertransfers", token="bob-token", data={"subresource": "killTransfersById", "listOfIds": row_id})
        assert resp.status_code == 200
        answers.append(json.loads(resp.text.replace(row_id, "ID")))
        got = api("GET", "fileusertransfers", token="bob-token", params={"subresource": "getById", "id": row_id})
        assert got.json()["result"] == []
    assert answers[0] == answers[1]


# -- 6: input that used to answer 500 --------------------------------------------------------
HUGE = 10**30


@pytest.mark.parametrize("field,value", [
    ("filesize", HUGE), ("filesize", str(HUGE)), ("filesize", "²"), ("filesize", "٣"), ("filesize", 1.5),
    ("job_retry_count", HUGE), ("max_retry", HUGE), ("start_time", HUGE), ("publish", [1]),
])
def test_bad_numbers_in_an_injection_are_400(api, field, value):
    assert_refused(inject(api, [row(**{field: value})]), 400, field)


@pytest.mark.parametrize("method,resource,params", [
    ("GET", "filetransfers", {"subresource": "listTransfers", "limit": str(HUGE)}),
    ("GET", "filetransfers", {"subresource": "acquiredTransfers", "asoworker": "w", "limit": str(HUGE)}),
    ("POST", "filetransfers", {"subresource": "retryTransfers", "asoworker": "w", "time_to": str(HUGE)}),
    ("POST", "task", {"subresource": "updatepublicationtime", "workflow": "t", "publicationtime": str(HUGE)}),
    ("POST", "filetransfers", {"subresource": "updateTransfers", "asoworker": "w", "list_of_ids": "a" * 56,
                               "list_of_transfer_state": "DONE", "list_of_retry_value": str(HUGE)}),
    ("POST", "filetransfers", {"subresource": "updatePublication", "asoworker": "w", "list_of_ids": "a" * 56,
                               "list_of_publication_state": "DONE", "list_of_publish_flag": "abc"}),
])
def test_bad_numbers_in_calls_are_400(api, method, resource, params):
    if method == "GET":
        resp = api(method, resource, token="service-token", params=params)
    else:
        resp = api(method, resource, token="service-token", data=params)
    assert resp.status_code == 400, resp.text


def test_publish_flag_as_a_json_list_is_400(api):
    body = {"subresource": "updatePublication", "asoworker": "w", "list_of_ids": ["a" * 56],
            "list_of_publication_state": ["DONE"], "publish_flag": [1]}
    assert_refused(api("POST", "filetransfers", token="service-token", json=body), 400, "publish_flag")


@pytest.mark.parametrize("body", ["[" * 100_000 + "]" * 100_000, '{"filesize": Infinity}', '{"filesize": NaN}', "[1e999]"],
                         ids=["deep", "infinity", "nan", "overflow"])
def test_deep_or_non_finite_json_is_400(api, body):
    resp = api("PUT", "fileusertransfers", data=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400, resp.text[:300]


def test_same_task_twice_in_one_upsert_is_400(api):
    task = {"tm_taskname": f"t{time.time_ns()}", "tm_username": "alice"}
    resp = api("PUT", "task", token="service-token", json={"tasks": [task, dict(task)]})
    assert_refused(resp, 400, "tasks[1].tm_taskname")


def test_last_publication_of_an_unknown_task_says_so(api):
    resp = api("POST", "task", token="service-token", data={"subresource": "updatepublicationtime", "workflow": "no_such_task"})
    assert resp.status_code == 200 and resp.json()["result"] == [{"modified": 0}]


def test_task_fields_that_cannot_be_empty_given_as_null_keep_their_defaults(api):
    name = f"t{time.time_ns()}"
    resp = api("PUT", "task", token="service-token",
               json={"tasks": [{"tm_taskname": name, "tm_username": "alice", "tm_creation_time": None, "tm_task_status": None}]})
    assert resp.status_code == 200, resp.text
    task = api("GET", "task", token="service-token", params={"subresource": "search", "workflow": name}).json()
    row = dict(zip(task["desc"]["columns"], task["result"][0], strict=True))
    assert row["tm_task_status"] == "SUBMITTED" and row["tm_creation_time"] > 0


def test_same_lfn_twice_in_one_metadata_put_is_400(api):
    entry = {"lfn": "/store/user/alice/m.root", "taskname": "t", "metadata": {}}
    resp = api("PUT", "filemetadata", token="service-token", json={"entries": [entry, dict(entry)]})
    assert_refused(resp, 400, "[1].lfn")


@pytest.mark.parametrize("block", ["b" * 1001, {"not": "a name"}], ids=["too-long", "object"])
def test_a_block_name_that_does_not_fit_its_column_is_400(api, block):
    body = {"subresource": "updatePublication", "asoworker": "w", "list_of_ids": ["a" * 56],
            "list_of_publication_state": ["DONE"], "list_of_block_name": [block]}
    assert_refused(api("POST", "filetransfers", token="service-token", json=body), 400, "list_of_block_name[0]")
