"""The calls Rucio's FTS3 transfer tool makes, sent and read the way it sends and reads them
(plain ``requests``, a JSON string body, ``res['http_message']`` after a priority change),
against a real ``aso fts-server``."""

from __future__ import annotations

import json
import os

import pytest

from aso.ftsd.db import JobStore
from tests.ftsd.fts import plain_fts
from tests.ftsd.storage import http_storage

HEADERS = {"Content-Type": "application/json"}


@pytest.fixture
def fts_and_storage(tmp_path):
    with plain_fts(tmp_path / "fts", "--workers", "1") as fts, http_storage(tmp_path / "web") as storage:
        yield fts, storage


def _rucio_file(source: str, destination: str, request_id: str, strategy: str = "orderly") -> dict:
    # the shape of Rucio's bulk_submit file dict (see the reference notes, section 7)
    return {
        "sources": [source], "destinations": [destination],
        "metadata": {"request_id": request_id, "scope": "user.jdoe", "name": request_id, "activity": "User Subscriptions"},
        "filesize": 4, "checksum": "ADLER32:0400019b", "selection_strategy": strategy, "activity": "User Subscriptions",
    }


def _submit(fts, files: list[dict]) -> str:
    params = {"verify_checksum": "both", "copy_pin_lifetime": -1, "bring_online": None, "job_metadata": {"issuer": "rucio"},
              "overwrite": False, "priority": 3, "max_time_in_queue": None, "id_generator": "deterministic",
              "sid": os.urandom(8).hex()}
    resp = fts.http.post(fts.url + "/jobs", data=json.dumps({"files": files, "params": params}), headers=HEADERS, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()["job_id"]


def _update_priority(fts, job_id: str, priority: int) -> dict:
    # Rucio: POST /jobs/<id> with {"params": {"priority": N}}; 200 expected, then res['http_message']
    resp = fts.http.post(f"{fts.url}/jobs/{job_id}", data=json.dumps({"params": {"priority": priority}}), headers=HEADERS, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_priority_change_answers_http_message_and_leaves_finished_jobs_alone(fts_and_storage, tmp_path):
    fts, storage = fts_and_storage
    storage.behaviour.gate.clear()  # the one worker holds the first copy: the second job stays queued
    for name in ("a", "b"):
        (storage.root / name).write_bytes(b"data")
    blocker = _submit(fts, [_rucio_file(f"{storage.url}/a", (tmp_path / "out" / "a").as_uri(), "r-a")])
    fts.wait_files(blocker, lambda fs: fs[0]["file_state"] == "ACTIVE")
    queued = _submit(fts, [_rucio_file(f"{storage.url}/b", (tmp_path / "out" / "b").as_uri(), "r-b")])

    res = _update_priority(fts, queued, 5)
    assert "http_message" in res and res["http_message"] is None  # Rucio: KeyError without the key
    assert res["http_status"] == "200 Ok" and res["job_id"] == queued and res["priority"] == 5
    assert fts.job(queued)["priority"] == 5

    storage.behaviour.gate.set()
    assert fts.wait(blocker)["job_state"] == "FINISHED" and fts.wait(queued)["job_state"] == "FINISHED"
    res = _update_priority(fts, blocker, 1)
    assert res["http_status"] == "304 Not Modified" and res["http_message"] == "The job is in a terminal state"
    assert res["priority"] == 3 and fts.job(blocker)["priority"] == 3  # a finished job is not changed

    # several ids: one element each, every one with job_id, http_status and http_message
    resp = fts.http.post(f"{fts.url}/jobs/{blocker},{queued},nosuchjob", data=json.dumps({"params": {"priority": 2}}),
                         headers=HEADERS, timeout=30)
    assert resp.status_code == 207
    answers = {a["job_id"]: a for a in resp.json()}
    assert answers[blocker]["http_status"] == answers[queued]["http_status"] == "304 Not Modified"
    assert answers["nosuchjob"]["http_status"] == "404 Not Found" and "nosuchjob" in answers["nosuchjob"]["http_message"]


def test_selection_strategy_is_kept_as_submitted(fts_and_storage, tmp_path):
    fts, storage = fts_and_storage
    (storage.root / "s").write_bytes(b"data")
    files = [_rucio_file(f"{storage.url}/s", (tmp_path / "out" / "s").as_uri(), "r-s"),
             _rucio_file(f"{storage.url}/s", (tmp_path / "out" / "s2").as_uri(), "r-s2", strategy="throughput")]
    job_id = _submit(fts, files)
    # Rucio's query: GET /jobs/<ids>?files=<keys>
    resp = fts.http.get(f"{fts.url}/jobs/{job_id}?files=file_state,dest_surl,selection_strategy", timeout=30)
    job = resp.json()
    assert [f["selection_strategy"] for f in job["files"]] == ["orderly", "throughput"]
    assert job["http_status"] == "200 Ok" and job["http_message"] is None
    assert [f["selection_strategy"] for f in fts.files(job_id)] == ["orderly", "throughput"]

    bad = _rucio_file(f"{storage.url}/s", (tmp_path / "out" / "s3").as_uri(), "r-s3", strategy="fastest")
    resp = fts.http.post(fts.url + "/jobs", data=json.dumps({"files": [bad]}), headers=HEADERS, timeout=30)
    assert resp.status_code == 400 and "files[0].selection_strategy" in resp.json()["message"]
    resp = fts.http.post(fts.url + "/jobs", json={"files": [{"sources": [f"{storage.url}/s"],
                         "destinations": [(tmp_path / "out" / "s4").as_uri()]}], "params": {"selection_strategy": "queue"}})
    assert fts.files(resp.json()["job_id"])[0]["selection_strategy"] == "queue"


def test_cancel_answers_carry_http_message(fts_and_storage, tmp_path):
    fts, storage = fts_and_storage
    storage.behaviour.gate.clear()
    (storage.root / "c").write_bytes(b"data")
    job_id = _submit(fts, [_rucio_file(f"{storage.url}/c", (tmp_path / "out" / "c").as_uri(), "r-c")])
    # Rucio's cancel: DELETE /jobs/<id>, 200 expected
    resp = fts.http.delete(f"{fts.url}/jobs/{job_id}", timeout=30)
    assert resp.status_code == 200
    res = resp.json()
    assert res["job_state"] == "CANCELED" and res["http_status"] == "200 Ok" and res["http_message"] is None
    again = fts.http.delete(f"{fts.url}/jobs/{job_id}", timeout=30).json()
    assert again["http_status"] == "304 Not Modified" and again["http_message"] == "The job is in a terminal state"
    storage.behaviour.gate.set()


def test_an_older_database_gains_the_selection_strategy_column(tmp_path):
    import sqlite3

    from aso.ftsd.db_rows import _SCHEMA

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(_SCHEMA.replace("    selection_strategy TEXT NOT NULL DEFAULT 'auto',\n", ""))
        assert "selection_strategy" not in {r[1] for r in conn.execute("PRAGMA table_info(t_file)")}
    store = JobStore(path)
    try:
        columns = {r[1] for r in store._read("PRAGMA table_info(t_file)", [])}
        assert "selection_strategy" in columns
    finally:
        store.close()


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/config/se"), ("POST", "/config/se"), ("POST", "/ban/se"), ("DELETE", "/ban/se?storage=x"),
    ("DELETE", "/jobs/all"), ("GET", "/optimizer"), ("GET", "/api-docs/schema/submit"),
])
def test_fts3_calls_not_served_answer_as_an_unknown_route_and_say_so(tmp_path, method, path):
    with plain_fts(tmp_path / "fts") as fts:
        resp = fts.http.request(method, fts.url + path, data="{}", headers=HEADERS, timeout=30)
        assert resp.status_code == 404
        body = resp.json()
        assert body["status"] == "404 Not Found"
        assert body["message"] == f"{method} {path.split('?')[0]} is an FTS3 call that aso fts-server does not support"
