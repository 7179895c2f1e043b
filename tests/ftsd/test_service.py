"""aso fts-server as a process, copying real files over file:// and http:// (a real local
HTTP storage), driven through its REST API."""

from __future__ import annotations

import os
import time
import zlib

import pytest

from aso.ftsd.jobs import FAILED_JOB_REASON, deterministic_job_id
from tests.ftsd.fts import PlainFts, plain_fts, transfer
from tests.ftsd.storage import http_storage


def adler(data: bytes) -> str:
    return f"{zlib.adler32(data):08x}"


def parts_in(folder) -> list:
    return [p for p in folder.rglob("*.part")]


@pytest.fixture
def fts(tmp_path):
    with plain_fts(tmp_path / "fts") as server:
        yield server


@pytest.fixture
def storage(tmp_path):
    with http_storage(tmp_path / "web") as store:
        yield store


def test_copies_over_file_and_http_verify_checksums(fts, storage, tmp_path):
    data = {name: os.urandom(n) for name, n in (("a", 3_000_000), ("b", 70_000), ("c", 1), ("d", 0))}
    for name, blob in data.items():
        (tmp_path / name).write_bytes(blob)
    (storage.root / "b").write_bytes(data["b"])
    out = tmp_path / "out"
    job_id = fts.submit(
        [
            transfer((tmp_path / "a").as_uri(), (out / "deep" / "a").as_uri()),
            transfer(f"{storage.url}/b", (out / "b").as_uri(), checksum=f"ADLER32:{adler(data['b'])}", filesize=70_000),
            transfer((tmp_path / "c").as_uri(), f"{storage.url}/up/c", checksum=f"adler32:{adler(data['c']).lstrip('0')}"),
            transfer((tmp_path / "d").as_uri(), (out / "d").as_uri()),
        ],
        verify_checksum=True,
        job_metadata={"issuer": "test"},
    )
    job = fts.wait(job_id)
    assert job["job_state"] == "FINISHED" and job["reason"] is None, fts.files(job_id)
    assert job["verify_checksum"] == "b" and job["job_metadata"] == {"issuer": "test", "auth_method": "unauthenticated"}
    assert (out / "deep" / "a").read_bytes() == data["a"]
    assert (out / "b").read_bytes() == data["b"]
    assert (storage.root / "up" / "c").read_bytes() == data["c"]
    assert (out / "d").read_bytes() == b""
    files = fts.files(job_id)
    assert [f["file_state"] for f in files] == ["FINISHED"] * 4
    assert [f["filesize"] for f in files] == [3_000_000, 70_000, 1, 0]
    assert files[0]["checksum"] == f"ADLER32:{adler(data['a'])}"
    assert all(f["start_time"] and f["finish_time"] for f in files)
    assert parts_in(out) == []


def test_a_storage_is_asked_for_its_checksum_and_damage_it_did_is_caught(fts, storage, tmp_path):
    """The destination's checksum comes from the storage (Want-Digest, else read back), never
    from the bytes sent: a storage that damages what it stores fails the copy."""
    data = os.urandom(100_000)
    (tmp_path / "src").write_bytes(data)
    storage.behaviour.digests = True
    ok = fts.submit([transfer((tmp_path / "src").as_uri(), f"{storage.url}/ok")], verify_checksum=True)
    assert fts.wait(ok)["job_state"] == "FINISHED"
    asked = [(m, p) for m, p, _ in storage.behaviour.requests if p == "/ok"]
    assert ("HEAD", "/ok") in asked and ("GET", "/ok") not in asked  # its Digest, no read-back

    storage.behaviour.digests = False
    storage.behaviour.corrupt_puts = True
    bad = fts.submit([transfer((tmp_path / "src").as_uri(), f"{storage.url}/bad")], verify_checksum=True, retry=-1)
    assert fts.wait(bad)["job_state"] == "FAILED"
    reason = fts.files(bad)[0]["reason"]
    assert reason.startswith("TRANSFER [5] Source and destination ADLER32 checksum do not match"), reason
    assert ("GET", "/bad") in [(m, p) for m, p, _ in storage.behaviour.requests]  # read back, no Digest given


def test_local_destinations_checksummed_in_one_pass_or_read_back_on_request(tmp_path):
    data = os.urandom(2_000_000)
    (tmp_path / "src").write_bytes(data)
    for extra in ((), ("--reread-destination",)):
        with plain_fts(tmp_path / f"fts{len(extra)}", *extra) as fts:
            out = tmp_path / f"out{len(extra)}"
            job = fts.submit([transfer((tmp_path / "src").as_uri(), (out / "x").as_uri(), checksum=f"ADLER32:{adler(data)}")],
                             verify_checksum="both")
            assert fts.wait(job)["job_state"] == "FINISHED"
            assert fts.files(job)[0]["checksum"] == f"ADLER32:{adler(data)}" and (out / "x").read_bytes() == data
        bad = PlainFts(tmp_path / f"bad{len(extra)}", *extra).start()
        try:
            job = bad.submit([transfer((tmp_path / "src").as_uri(), (out / "y").as_uri(), checksum="ADLER32:00000001")],
                             verify_checksum="target", retry=-1)
            assert bad.wait(job)["job_state"] == "FAILED"
            assert "Destination and user-defined ADLER32 checksum do not match" in bad.files(job)[0]["reason"]
            assert not (out / "y").exists()
        finally:
            bad.stop()


def test_failures_are_reported_in_fts3_words_and_leave_no_half_file(fts, tmp_path):
    (tmp_path / "good").write_bytes(b"good data")
    (tmp_path / "bad").write_bytes(b"some data")
    (tmp_path / "new").write_bytes(b"new")
    out = tmp_path / "out"
    out.mkdir()
    (out / "exists").write_bytes(b"old")
    job_id = fts.submit(
        [
            transfer((tmp_path / "good").as_uri(), (out / "good").as_uri()),
            transfer((tmp_path / "bad").as_uri(), (out / "bad").as_uri(), checksum="ADLER32:deadbeef"),
            transfer((tmp_path / "missing").as_uri(), (out / "missing").as_uri()),
            transfer((tmp_path / "new").as_uri(), (out / "exists").as_uri()),
        ],
        verify_checksum="both",
        retry=3,
        retry_delay=1,
    )
    job = fts.wait(job_id)
    assert job["job_state"] == "FINISHEDDIRTY" and job["reason"] == FAILED_JOB_REASON
    by_dest = {f["dest_surl"].rsplit("/", 1)[1]: f for f in fts.files(job_id)}
    assert by_dest["good"]["file_state"] == "FINISHED"
    bad = by_dest["bad"]
    assert bad["file_state"] == "FAILED"
    assert bad["reason"] == f"SOURCE [5] Source and user-defined ADLER32 checksum do not match ({adler(b'some data')} != deadbeef)"
    assert by_dest["missing"]["reason"].startswith("SOURCE [2] ") and "No such file or directory" in by_dest["missing"]["reason"]
    assert by_dest["exists"]["reason"] == "DESTINATION [17] Destination file exists and overwrite is not enabled"
    # none of these can succeed on a retry, so none was retried
    assert [by_dest[n]["retry"] for n in ("bad", "missing", "exists")] == [0, 0, 0]
    assert by_dest["bad"]["recoverable"] is False
    assert (out / "exists").read_bytes() == b"old"
    assert not (out / "bad").exists() and not (out / "missing").exists()
    assert parts_in(out) == []

    everything_failed = fts.submit([transfer((tmp_path / "missing").as_uri(), (out / "m2").as_uri())])
    assert fts.wait(everything_failed)["job_state"] == "FAILED"


def test_overwrite_replaces_the_destination(fts, tmp_path):
    (tmp_path / "src").write_bytes(b"new content")
    (tmp_path / "dst").write_bytes(b"old")
    job_id = fts.submit([transfer((tmp_path / "src").as_uri(), (tmp_path / "dst").as_uri())], overwrite=True)
    assert fts.wait(job_id)["job_state"] == "FINISHED"
    assert (tmp_path / "dst").read_bytes() == b"new content"


def test_retry_after_a_transient_failure(fts, storage, tmp_path):
    blob = os.urandom(100_000)
    (storage.root / "t.bin").write_bytes(blob)
    storage.behaviour.fail_gets["/t.bin"] = 1
    job_id = fts.submit([transfer(f"{storage.url}/t.bin", (tmp_path / "t.out").as_uri())], retry=2, retry_delay=1)
    first = fts.wait_files(job_id, lambda fs: fs[0]["retry"] == 1)
    assert first[0]["file_state"] in ("SUBMITTED", "READY", "ACTIVE", "FINISHED")
    job = fts.wait(job_id)
    assert job["job_state"] == "FINISHED"
    assert (tmp_path / "t.out").read_bytes() == blob
    f = fts.files(job_id)[0]
    assert f["retry"] == 1
    retries = fts.request("GET", f"/jobs/{job_id}/files/{f['file_id']}/retries").json()
    assert len(retries) == 1 and retries[0]["attempt"] == 1 and "HTTP 503" in retries[0]["reason"]
    assert retries[0]["reason"].startswith("SOURCE [5] ")
    assert len(storage.behaviour.gets("/t.bin")) == 2

    # retry -1: never retried
    storage.behaviour.fail_gets["/t.bin"] = 1
    once = fts.submit([transfer(f"{storage.url}/t.bin", (tmp_path / "t2.out").as_uri())], retry=-1)
    assert fts.wait(once)["job_state"] == "FAILED"
    assert fts.files(once)[0]["retry"] == 0


def _slow_job(fts: PlainFts, storage, tmp_path, size: int = 8 * 1024 * 1024, name: str = "slow.bin", **params):
    (storage.root / name).write_bytes(os.urandom(size))
    dest = tmp_path / "out" / name
    return fts.submit([transfer(f"{storage.url}/{name}", dest.as_uri())], **params), dest


def test_cancel_a_job_mid_copy(fts, storage, tmp_path):
    storage.behaviour.rate = 1024 * 1024
    job_id, dest = _slow_job(fts, storage, tmp_path)
    fts.wait_files(job_id, lambda fs: fs[0]["file_state"] == "ACTIVE")
    deadline = time.monotonic() + 10
    while not parts_in(dest.parent) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert parts_in(dest.parent), "the copy never started writing"
    resp = fts.request("DELETE", f"/jobs/{job_id}")
    assert resp.status_code == 200
    assert resp.json()["job_state"] == "CANCELED" and resp.json()["reason"] == "Job canceled by the user"
    files = fts.files(job_id)
    assert files[0]["file_state"] == "CANCELED" and files[0]["reason"] == "Job canceled by the user"
    deadline = time.monotonic() + 10
    while parts_in(dest.parent) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert parts_in(dest.parent) == [] and not dest.exists()
    again = fts.request("DELETE", f"/jobs/{job_id}")
    assert again.status_code == 200 and again.json()["http_status"] == "304 Not Modified"
    assert again.json()["job_state"] == "CANCELED"


def test_cancel_some_files_of_a_job(fts, storage, tmp_path):
    storage.behaviour.gate.clear()
    for name in ("x", "y"):
        (storage.root / name).write_bytes(b"data " + name.encode())
    job_id = fts.submit([transfer(f"{storage.url}/{n}", (tmp_path / n).as_uri()) for n in ("x", "y")])
    fids = [f["file_id"] for f in fts.files(job_id)]
    resp = fts.request("DELETE", f"/jobs/{job_id}/files/{fids[0]}")
    assert resp.status_code == 200 and resp.json() == "CANCELED"
    resp = fts.request("DELETE", f"/jobs/{job_id}/files/{fids[0]},999999")
    assert resp.json() == ["CANCELED", "File does not belong to the job"]
    storage.behaviour.gate.set()
    job = fts.wait(job_id)
    assert job["job_state"] == "FINISHEDDIRTY"
    assert [f["file_state"] for f in fts.files(job_id)] == ["CANCELED", "FINISHED"]
    assert not (tmp_path / "x").exists() and (tmp_path / "y").read_bytes() == b"data y"
    assert fts.request("DELETE", f"/jobs/{job_id}/files/abc").status_code == 400


def test_max_time_in_queue_cancels_waiting_jobs(tmp_path):
    with plain_fts(tmp_path / "fts", "--workers", "1") as fts, http_storage(tmp_path / "web") as storage:
        storage.behaviour.gate.clear()
        blocker, _ = _slow_job(fts, storage, tmp_path, size=1000)
        fts.wait_files(blocker, lambda fs: fs[0]["file_state"] == "ACTIVE")
        (tmp_path / "q").write_bytes(b"queued")
        waiting = fts.submit([transfer((tmp_path / "q").as_uri(), (tmp_path / "q.out").as_uri())], max_time_in_queue="1s")
        job = fts.wait(waiting, timeout=15)
        assert job["job_state"] == "CANCELED"
        assert "max-time-in-queue" in job["reason"]
        assert fts.files(waiting)[0]["file_state"] == "CANCELED"
        assert not (tmp_path / "q.out").exists()
        storage.behaviour.gate.set()
        assert fts.wait(blocker)["job_state"] == "FINISHED"


def test_priority_then_fifo_with_one_worker(tmp_path):
    with plain_fts(tmp_path / "fts", "--workers", "1") as fts, http_storage(tmp_path / "web") as storage:
        storage.behaviour.gate.clear()
        blocker, _ = _slow_job(fts, storage, tmp_path, size=10, name="block")
        fts.wait_files(blocker, lambda fs: fs[0]["file_state"] == "ACTIVE")
        jobs = []
        for name, priority in (("low", 1), ("mid1", 3), ("high", 5), ("mid2", 3)):
            (storage.root / name).write_bytes(name.encode())
            jobs.append(fts.submit([transfer(f"{storage.url}/{name}", (tmp_path / name).as_uri())], priority=priority))
        storage.behaviour.gate.set()
        for job_id in jobs:
            assert fts.wait(job_id)["job_state"] == "FINISHED"
        order = [p for m, p, _ in storage.behaviour.requests if m == "GET"]
        assert order == ["/block", "/high", "/mid1", "/mid2", "/low"]


def test_global_and_per_link_limits(tmp_path):
    with plain_fts(tmp_path / "fts", "--workers", "3", "--per-link", "2") as fts, http_storage(tmp_path / "web") as storage:
        storage.behaviour.gate.clear()
        port = storage.url.rsplit(":", 1)[1]
        files = []
        for i in range(4):
            for host in ("127.0.0.1", "localhost"):
                name = f"{host}-{i}"
                (storage.root / name).write_bytes(os.urandom(1000))
                files.append(transfer(f"http://{host}:{port}/{name}", (tmp_path / "out" / name).as_uri()))
        job_id = fts.submit(files)
        deadline = time.monotonic() + 10
        while storage.behaviour.active_gets < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # had the limits been ignored, more copies would have started by now
        b = storage.behaviour
        assert b.active_gets == 3 and b.max_active_gets == 3
        assert max(b.per_host_max.values()) == 2
        active = [f for f in fts.files(job_id) if f["file_state"] in ("READY", "ACTIVE")]
        assert len(active) == 3
        b.gate.set()
        assert fts.wait(job_id)["job_state"] == "FINISHED"
        assert b.max_active_gets == 3 and max(b.per_host_max.values()) == 2


def test_deterministic_ids_bulk_status_and_listing(fts, tmp_path):
    (tmp_path / "s").write_bytes(b"x")
    vo = fts.request("GET", "/whoami").json()["vos"][0]
    files = [transfer((tmp_path / "s").as_uri(), (tmp_path / "d").as_uri())]
    job_id = fts.submit(files, id_generator="deterministic", sid="chunk-1")
    assert job_id == deterministic_job_id(vo, "chunk-1")
    again = fts.request("POST", "/jobs", json={"files": files, "params": {"id_generator": "deterministic", "sid": "chunk-1"}})
    assert again.status_code == 409 and again.json()["status"] == "409 Conflict" and job_id in again.json()["message"]
    fts.wait(job_id)

    resp = fts.request("GET", f"/jobs/{job_id},no-such-job?files=file_state,dest_surl,bogus")
    assert resp.status_code == 207
    known, unknown = resp.json()
    assert known["job_id"] == job_id and known["http_status"] == "200 Ok"
    assert known["files"] == [{"file_state": "FINISHED", "dest_surl": (tmp_path / "d").as_uri()}]
    assert unknown == {"job_id": "no-such-job", "http_status": "404 Not Found",
                       "http_message": 'No job with the id "no-such-job" has been found'}
    both = fts.request("GET", f"/jobs/{job_id},{job_id}")
    assert both.status_code == 200
    single = fts.request("GET", "/jobs/no-such-job")
    assert single.status_code == 404 and single.json()["http_status"] == "404 Not Found"
    assert fts.request("GET", f"/jobs/{job_id}/dm").json() == []
    assert fts.request("GET", f"/jobs/{job_id}/job_state").json() == "FINISHED"
    assert fts.request("GET", f"/jobs/{job_id}/nonsense").status_code == 404

    root = fts.request("GET", "//").json()
    assert root["api"] == {"major": 3, "minor": 13, "patch": 4}
    assert fts.request("GET", "//jobs").json() == []  # finished jobs are not listed by default
    listed = fts.request("GET", "/jobs?state_in=FINISHED&limit=10").json()
    assert [j["job_id"] for j in listed] == [job_id]
    assert fts.request("GET", "/jobs?state_in=FINISHED&limit=10&fields=job_id,job_state").json() == [
        {"job_id": job_id, "job_state": "FINISHED"}]
    assert fts.request("GET", "/jobs?dlg_id=0123456789abcdef").status_code == 403

    modified = fts.request("POST", f"/jobs/{job_id}", json={"params": {"priority": 5}})
    # a finished job keeps its priority, as in FTS3
    assert modified.status_code == 200 and modified.json()["http_status"] == "304 Not Modified"
    assert modified.json()["priority"] == 3


BAD_BODIES = [
    (b"{not json", "Badly formatted JSON request"),
    (b'{"params": {}}', "Missing parameter: files"),
    (b'{"files": []}', "No transfers or namespace operations specified"),
    (b'{"files": [{"sources": ["file:///a"]}]}', "Missing parameter: files[0].destinations"),
    (b'{"files": [{"sources": ["gsiftp://h/a"], "destinations": ["file:///b"]}]}', "files[0].sources[0]"),
    (b'{"files": [{"sources": ["file:///a"], "destinations": ["http:///b"]}]}', "has no host"),
    (b'{"files": [{"sources": ["file:///a"], "destinations": ["file:///b"], "checksum": "ADLER32:xyz"}]}', "is not an adler32 value"),
    (b'{"files": [{"sources": ["file:///a"], "destinations": ["file:///b"], "checksum": "MD5:abc"}]}', "not supported"),
    (b'{"files": [{"sources": ["file:///a"], "destinations": ["file:///b"]}], "params": {"verify_checksum": "maybe"}}', "verify_checksum"),
    (b'{"files": [{"sources": ["file:///a"], "destinations": ["file:///b"]}], "params": {"id_generator": "deterministic"}}', "sid"),
    (b'{"files": [{"sources": ["file:///a"], "destinations": ["file:///b"]}], "params": {"max_time_in_queue": "soon"}}', "max_time_in_queue"),
]


def test_bad_input_gets_a_clear_error_and_queues_nothing(fts):
    root = fts.roots[0].as_uri().encode()
    for body, message in BAD_BODIES:
        body = body.replace(b'"file:///', b'"' + root + b"/")  # under the service's root: only the named fault
        resp = fts.request("POST", "/jobs", data=body, headers={"Content-Type": "application/json"})
        assert resp.status_code == 400, (body, resp.text)
        assert resp.json()["status"] == "400 Bad Request"
        assert message in resp.json()["message"], (body, resp.json())
    everything = fts.request("GET", "/jobs?state_in=SUBMITTED,ACTIVE,FINISHED,FAILED,CANCELED&limit=500").json()
    assert everything == []
    resp = fts.request("DELETE", "/jobs/unknown-job")
    assert resp.status_code == 404
    assert fts.request("POST", "/jobs", json={"files": [transfer("file:///a", "file:///b")], "delete": ["x"]}).status_code == 405


def test_killed_mid_copy_resumes_from_its_checkpoint(tmp_path):
    """SIGKILL while a copy runs: after a restart the job is still there, the copy continues
    from the checkpoint with a Range request (the part file is not truncated to zero), the
    result is byte-identical, and a file that had finished is not copied again."""
    size = 24 * 1024 * 1024
    with http_storage(tmp_path / "web", rate=4 * 1024 * 1024) as storage:
        blob = os.urandom(size)
        (storage.root / "big.bin").write_bytes(blob)
        (storage.root / "small.bin").write_bytes(b"small")
        out = tmp_path / "out"
        fts = PlainFts(tmp_path / "fts").start()
        try:
            job_id = fts.submit(
                [transfer(f"{storage.url}/small.bin", (out / "small.bin").as_uri()),
                 transfer(f"{storage.url}/big.bin", (out / "big.bin").as_uri())],
                verify_checksum="both",
            )
            fts.wait_files(job_id, lambda fs: fs[0]["file_state"] == "FINISHED" and fs[1]["file_state"] == "ACTIVE")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                parts = parts_in(out)
                if parts and parts[0].stat().st_size > 6 * 1024 * 1024:
                    break
                time.sleep(0.05)
            time.sleep(0.5)  # at least one checkpoint after that
            fts.kill9()
            written = parts_in(out)[0].stat().st_size
            assert 0 < written < size
            assert not (out / "big.bin").exists()

            fts.start()
            job = fts.wait(job_id, timeout=60)
            assert job["job_state"] == "FINISHED", fts.files(job_id)
        finally:
            fts.stop()
        assert (out / "big.bin").read_bytes() == blob
        assert parts_in(out) == []
        ranges = storage.behaviour.gets("/big.bin")
        # first attempt, the resumed copy, then (verify_checksum both) one read of the whole
        # source for its checksum, since the resumed copy never read the prefix from it
        assert len(ranges) == 3 and ranges[0] is None and ranges[2] is None
        resumed_at = int(ranges[1].split("=")[1].rstrip("-"))
        # from the last checkpoint: not from zero, and not beyond what was on disk
        assert 4 * 1024 * 1024 <= resumed_at <= written
        assert storage.behaviour.gets("/small.bin") == [None]
        assert "resuming from byte" in fts.log.read_text()


def test_simulation_mode_moves_no_data(tmp_path):
    with plain_fts(tmp_path / "fts", "--simulate") as fts:
        job_id = fts.submit([transfer((tmp_path / "nothing-here").as_uri(), (tmp_path / "out").as_uri(), filesize=123)])
        job = fts.wait(job_id)
        assert job["job_state"] == "FINISHED"
        assert fts.files(job_id)[0]["filesize"] == 123
        assert not (tmp_path / "out").exists()
        assert "SIMULATION" in fts.log.read_text()
