"""Multihop jobs (FTS3's job type H) in ``aso fts-server``: a real service process over
loopback, file:// storages under tmp folders and a real HTTP storage; the hops run in order,
a failed hop fails the ones after it, scratch copies are removed (at once after the last hop,
after a delay after a failure), and a resubmitted path reuses a verified intermediate copy."""

from __future__ import annotations

import json
import os
import sqlite3
import time
import zlib
from pathlib import Path

import pytest

from aso.ftsd import jobs as fj
from aso.ftsd.db import JobStore
from aso.ftsd.outbox import MessageSettings
from aso.ftsd.service import local_identity
from aso.messaging import fts3 as msg
from tests.ftsd.fts import PlainFts, plain_fts, transfer
from tests.ftsd.storage import http_storage

UNUSED = "Unused hop in multi-hop"


def adler(data: bytes) -> str:
    return f"{zlib.adler32(data):08x}"


def hops(urls: list[str], **extra) -> list[dict]:
    """The files of a multihop job through ``urls`` (a -> b -> c ...), each with ``extra``."""
    return [transfer(a, b, **extra) for a, b in zip(urls, urls[1:], strict=False)]


def wait_until(predicate, timeout: float = 15, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met after {timeout} s")
        time.sleep(0.05)


def pending_cleanup(fts: PlainFts) -> list[tuple[str, float]]:
    with sqlite3.connect(fts.db) as conn:
        return conn.execute("SELECT url, not_before FROM t_cleanup ORDER BY cleanup_id").fetchall()


def test_three_hops_run_in_order_and_the_scratch_copies_are_removed(tmp_path):
    data = os.urandom(1_500_000)
    (tmp_path / "a").write_bytes(data)
    path = [(tmp_path / "a").as_uri(), (tmp_path / "s1" / "b").as_uri(), (tmp_path / "s2" / "c").as_uri(),
            (tmp_path / "out" / "d").as_uri()]
    with plain_fts(tmp_path / "fts") as fts:
        job_id = fts.submit(hops(path, checksum=f"ADLER32:{adler(data)}", filesize=len(data), metadata={"oracleId": "r1"}),
                            multihop=True, verify_checksum="both")
        job = fts.job(job_id)
        assert job["job_type"] == "H" and job["source_se"] == "file://" and job["dest_se"] == "file://"
        job = fts.wait(job_id)
        assert job["job_state"] == "FINISHED" and job["reason"] is None, fts.files(job_id)
        assert (tmp_path / "out" / "d").read_bytes() == data
        files = fts.files(job_id)
        assert [f["file_index"] for f in files] == [0, 1, 2]
        assert [f["file_state"] for f in files] == ["FINISHED"] * 3
        assert all(f["file_metadata"] == {"oracleId": "r1"} for f in files)
        # strictly in order: a hop starts once the one before finished
        for before, after in zip(files, files[1:], strict=False):
            assert before["finish_time"] <= after["start_time"]
        # the intermediate copies go once the last hop is done; the final one stays
        wait_until(lambda: not (tmp_path / "s1" / "b").exists() and not (tmp_path / "s2" / "c").exists(),
                   what="scratch copies removed")
        wait_until(lambda: pending_cleanup(fts) == [], what="cleanup entries done")
        assert (tmp_path / "a").read_bytes() == data
        listed = fts.request("GET", "/jobs?state_in=FINISHED&limit=10&fields=job_id,job_type").json()
        assert listed == [{"job_id": job_id, "job_type": "H"}]
        assert "scratch copy of a multihop job removed" in fts.log.read_text()


def test_a_failed_hop_fails_the_later_ones_and_its_scratch_copies_wait_even_across_a_restart(tmp_path):
    (tmp_path / "a").write_bytes(b"hop data")
    (tmp_path / "blocker").write_bytes(b"a file where the second hop wants a folder")
    path = [(tmp_path / "a").as_uri(), (tmp_path / "s1" / "b").as_uri(), (tmp_path / "blocker" / "x" / "c").as_uri(),
            (tmp_path / "out" / "d").as_uri()]
    with plain_fts(tmp_path / "fts", "--multihop-cleanup-delay", "3") as fts:
        job_id = fts.submit(hops(path), multihop=True, retry=2, retry_delay=1)
        job = fts.wait(job_id)
        assert job["job_state"] == "FAILED" and job["reason"] == fj.FAILED_JOB_REASON
        files = fts.files(job_id)
        assert [f["file_state"] for f in files] == ["FINISHED", "FAILED", "FAILED"]
        assert files[1]["reason"].startswith("DESTINATION [20] ")  # not a folder: not retried
        assert files[1]["retry"] == 0
        assert files[2]["reason"] == UNUSED and files[2]["start_time"] is None  # never copied
        assert not (tmp_path / "out").exists()
        # the scratch copy of the first hop waits for the delay (a resubmission may reuse it)
        [(url, not_before)] = pending_cleanup(fts)
        assert url == path[1]
        ended = time.time()
        assert ended - 1 <= not_before - 3 <= ended + 1
        fts.stop()  # a restart loses no cleanup entry
        fts.start()
        assert pending_cleanup(fts) == [(url, not_before)]
        time.sleep(max(0.0, not_before - time.time() - 1))
        assert (tmp_path / "s1" / "b").exists()
        wait_until(lambda: not (tmp_path / "s1" / "b").exists(), timeout=10, what="delayed cleanup")
        assert time.time() >= not_before
        wait_until(lambda: pending_cleanup(fts) == [], what="cleanup entry done")  # forgotten just after the delete


def test_a_resubmitted_path_reuses_a_verified_intermediate_copy(tmp_path):
    data = os.urandom(300_000)
    (tmp_path / "a").write_bytes(data)
    (tmp_path / "blocker").write_bytes(b"x")
    mid = tmp_path / "s1" / "b"
    path = [(tmp_path / "a").as_uri(), mid.as_uri(), (tmp_path / "blocker" / "c").as_uri()]
    files = hops(path, checksum=f"ADLER32:{adler(data)}", filesize=len(data))
    with plain_fts(tmp_path / "fts") as fts:
        first = fts.submit(files, multihop=True)
        assert fts.wait(first)["job_state"] == "FAILED"
        assert [f["file_state"] for f in fts.files(first)] == ["FINISHED", "FAILED"]
        assert mid.read_bytes() == data
        old = time.time() - 1000
        os.utime(mid, (old, old))  # a copy would give it a new mtime

        (tmp_path / "blocker").unlink()
        (tmp_path / "blocker").mkdir()
        second = fts.submit(files, multihop=True)
        job = fts.wait(second)
        assert job["job_state"] == "FINISHED", fts.files(second)
        assert (tmp_path / "blocker" / "c").read_bytes() == data
        hop0 = fts.files(second)[0]
        assert hop0["file_state"] == "FINISHED" and hop0["filesize"] == len(data)
        assert f"file {hop0['file_id']} (job {second}): reused the copy already at" in fts.log.read_text()
        # the scratch copy the failed job left is the finished job's to remove now (its own
        # delayed entry is taken over), and goes with it
        wait_until(lambda: not mid.exists(), what="scratch copy removed")
        wait_until(lambda: pending_cleanup(fts) == [], what="no entry left")


def test_a_file_the_service_did_not_write_is_reused_but_never_deleted(tmp_path):
    """Someone else's file that happens to have the submitted checksum at an intermediate
    destination: the hop is done without copying, and neither the job's end nor a cancel
    deletes it (the service would be deleting what a user may not)."""
    data = os.urandom(50_000)
    (tmp_path / "a").write_bytes(data)
    (tmp_path / "theirs").mkdir()
    foreign = tmp_path / "theirs" / "b"
    foreign.write_bytes(data)
    path = [(tmp_path / "a").as_uri(), foreign.as_uri(), (tmp_path / "out" / "c").as_uri()]
    with plain_fts(tmp_path / "fts") as fts:
        job_id = fts.submit(hops(path, checksum=f"ADLER32:{adler(data)}", filesize=len(data)), multihop=True)
        assert fts.wait(job_id)["job_state"] == "FINISHED"
        assert (tmp_path / "out" / "c").read_bytes() == data
        time.sleep(0.5)
        assert foreign.read_bytes() == data and pending_cleanup(fts) == []


def test_an_intermediate_copy_that_does_not_match_is_not_reused(tmp_path):
    (tmp_path / "a").write_bytes(b"the real data")
    (tmp_path / "s1").mkdir()
    (tmp_path / "s1" / "b").write_bytes(b"something else")
    path = [(tmp_path / "a").as_uri(), (tmp_path / "s1" / "b").as_uri(), (tmp_path / "out" / "c").as_uri()]
    with plain_fts(tmp_path / "fts") as fts:
        job_id = fts.submit(hops(path, checksum=f"ADLER32:{adler(b'the real data')}"), multihop=True)
        assert fts.wait(job_id)["job_state"] == "FAILED"
        reason = fts.files(job_id)[0]["reason"]
        assert reason == "DESTINATION [17] Destination file exists and overwrite is not enabled"
        assert (tmp_path / "s1" / "b").read_bytes() == b"something else"  # not ours to delete
        assert pending_cleanup(fts) == []
        again = fts.submit(hops(path, checksum=f"ADLER32:{adler(b'the real data')}"), multihop=True, overwrite_hop=True)
        assert fts.wait(again)["job_state"] == "FINISHED"
        assert (tmp_path / "out" / "c").read_bytes() == b"the real data"


def test_cancel_covers_every_hop_and_partial_cancel_is_refused(tmp_path):
    with plain_fts(tmp_path / "fts") as fts, http_storage(tmp_path / "web") as storage:
        storage.behaviour.gate.clear()  # the first hop's read waits
        (storage.root / "a").write_bytes(b"data")
        path = [f"{storage.url}/a", (tmp_path / "s1" / "b").as_uri(), (tmp_path / "out" / "c").as_uri()]
        job_id = fts.submit(hops(path), multihop=True)
        files = fts.wait_files(job_id, lambda fs: fs[0]["file_state"] == "ACTIVE")
        assert files[1]["file_state"] == "NOT_USED"
        partial = fts.request("DELETE", f"/jobs/{job_id}/files/{files[1]['file_id']}")
        assert partial.status_code == 400 and "multihop" in partial.json()["message"]
        resp = fts.request("DELETE", f"/jobs/{job_id}")
        assert resp.status_code == 200 and resp.json()["job_state"] == "CANCELED"
        storage.behaviour.gate.set()
        files = fts.files(job_id)
        assert [f["file_state"] for f in files] == ["CANCELED", "CANCELED"]
        assert fts.job(job_id)["job_state"] == "CANCELED"
        time.sleep(0.5)
        assert not (tmp_path / "s1" / "b").exists() and not (tmp_path / "out").exists()
        assert [f["file_state"] for f in fts.files(job_id)] == ["CANCELED", "CANCELED"]


@pytest.mark.parametrize(("params", "files", "message"), [
    ({"multihop": True}, lambda r: [transfer(f"{r}/a", f"{r}/b"), transfer(f"{r}/x", f"{r}/c")], "files[1].sources[0]"),
    ({"multihop": "Y", "reuse": True}, lambda r: hops([f"{r}/a", f"{r}/b", f"{r}/c"]), "params.reuse"),
    ({"multihop": "true"}, lambda r: [transfer(f"{r}/a", f"{r}/b")], "at least 2 hops"),
])
def test_bad_multihop_submissions_are_400_and_queue_nothing(tmp_path, params, files, message):
    with plain_fts(tmp_path / "fts") as fts:
        root = fts.roots[0].as_uri()
        resp = fts.request("POST", "/jobs", json={"files": files(root), "params": params})
        assert resp.status_code == 400, resp.text
        assert message in resp.json()["message"]
        assert fts.request("GET", "/jobs?state_in=SUBMITTED,ACTIVE,FAILED&limit=10").json() == []


def test_a_restarted_service_goes_on_with_the_later_hops(tmp_path):
    data = os.urandom(3 * 1024 * 1024)
    (tmp_path / "a").write_bytes(data)
    with http_storage(tmp_path / "web", rate=1024 * 1024) as storage:
        # file -> HTTP storage (PUT) -> a slow read back -> file
        path = [(tmp_path / "a").as_uri(), f"{storage.url}/mid/b", (tmp_path / "s2" / "c").as_uri(),
                (tmp_path / "out" / "d").as_uri()]
        fts = PlainFts(tmp_path / "fts").start()
        try:
            job_id = fts.submit(hops(path, checksum=f"ADLER32:{adler(data)}"), multihop=True)
            fts.wait_files(job_id, lambda fs: fs[1]["file_state"] == "ACTIVE")
            fts.kill9()
            with sqlite3.connect(fts.db) as conn:
                states = [r[0] for r in conn.execute("SELECT file_state FROM t_file ORDER BY file_index")]
            assert states == ["FINISHED", "ACTIVE", "NOT_USED"]
            fts.start()
            job = fts.wait(job_id, timeout=60)
            assert job["job_state"] == "FINISHED", fts.files(job_id)
            assert (tmp_path / "out" / "d").read_bytes() == data
            # both scratch copies removed, the one on the HTTP storage with a DELETE
            wait_until(lambda: not (storage.root / "mid" / "b").exists() and not (tmp_path / "s2" / "c").exists(),
                       what="scratch copies removed")
            assert ("DELETE", "/mid/b", None) in storage.behaviour.requests
        finally:
            fts.stop()


# -- the rules and the messages, on the store itself ------------------------------------------


def test_job_state_follows_fts3s_multihop_rules():
    assert fj.job_state(["SUBMITTED", "NOT_USED"], multihop=True) == "SUBMITTED"
    assert fj.job_state(["FINISHED", "SUBMITTED", "NOT_USED"], multihop=True) == "ACTIVE"
    assert fj.job_state(["FINISHED", "ACTIVE", "NOT_USED"], multihop=True) == "ACTIVE"
    assert fj.job_state(["FINISHED", "FINISHED", "FINISHED"], multihop=True) == "FINISHED"
    assert fj.job_state(["FINISHED", "FAILED", "NOT_USED"], multihop=True) == "FAILED"  # terminal at once
    assert fj.job_state(["CANCELED", "NOT_USED"], multihop=True) == "FAILED"
    assert fj.job_state(["FINISHED", "FAILED"]) == "FINISHEDDIRTY"  # a regular job's reading


def _store(tmp_path: Path) -> JobStore:
    store = JobStore(tmp_path / "fts.db")
    store.messages = MessageSettings(brokers=("127.0.0.1:1",), vo="cms", endpoint="https://fts.example:8446")
    return store


def _completions(store: JobStore) -> list[dict]:
    complete = msg.destination(msg.COMPLETE_TOPIC)
    return [json.loads(body) for _, dest, body, _ in store.outbox_batch(10_000) if dest == complete]


def _submit(store: JobStore, tmp_path: Path, n: int, **params) -> str:
    urls = [(tmp_path / f"h{i}").as_uri() for i in range(n + 1)]
    body = {"files": hops(urls, metadata={"oracleId": "row-1"}), "params": {"multihop": True, **params}}
    return store.submit(fj.parse_submission(body, roots=(str(tmp_path),)), local_identity("/DC=test/CN=mh"))


def test_completion_messages_of_a_multihop_job(tmp_path):
    store = _store(tmp_path)
    try:
        ok = _submit(store, tmp_path, 2, job_metadata={"issuer": "ASO"})
        for _ in range(2):
            [task] = store.claim([f.file_id for f in store.queued() if f.job_id == ok])
            assert store.finish(task.file_id, "FINISHED", filesize=4).job_state in ("ACTIVE", "FINISHED")
        first, last = _completions(store)
        assert (first["job_multihop"], first["transfer_lasthop"], first["job_state"]) == ("true", "false", "ACTIVE")
        assert (last["job_multihop"], last["transfer_lasthop"], last["job_state"]) == ("true", "true", "FINISHED")
        assert not msg.Completion.from_message(msg.encode(first)).is_final()  # the file has not arrived
        assert msg.Completion.from_message(msg.encode(last)).is_final()
        assert store.jobs([ok])[ok]["job_state"] == "FINISHED"

        before = len(_completions(store))
        bad = _submit(store, tmp_path, 3, retry=1)
        [task] = store.claim([f.file_id for f in store.queued() if f.job_id == bad])
        retried = store.finish(task.file_id, "FAILED", reason="TRANSFER [5] broken pipe", recoverable=True)
        assert retried.retried and store.jobs([bad])[bad]["job_state"] != "FAILED"
        [task] = store.claim([task.file_id], now=time.time() + 1000)
        store.finish(task.file_id, "FAILED", reason="SOURCE [2] gone", recoverable=False)
        again, failed, unused1, unused2 = _completions(store)[before:]
        assert again["job_state"] == "ACTIVE" and not msg.Completion.from_message(msg.encode(again)).is_final()
        assert failed["job_state"] == "FAILED" and failed["transfer_lasthop"] == "false"
        assert msg.Completion.from_message(msg.encode(failed)).is_final()
        assert [u["t__error_message"] for u in (unused1, unused2)] == [UNUSED, UNUSED]
        assert unused2["transfer_lasthop"] == "true" and unused2["job_state"] == "FAILED"
        assert unused1["file_metadata"] == {"oracleId": "row-1"}
        assert store.jobs([bad])[bad]["job_state"] == "FAILED"
        assert [f["file_state"] for f in store.files([bad])[bad]] == ["FAILED"] * 3
    finally:
        store.close()
