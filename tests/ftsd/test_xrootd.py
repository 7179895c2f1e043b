"""root:// copies by aso fts-server against real xrootd daemons (two "sites")."""

from __future__ import annotations

import errno
import os
import random
import sqlite3
import time
import zlib

import pytest
from XRootD.client.responses import XRootDStatus

from aso.ftsd import urls
from aso.ftsd.protocols import delete, destination_for, source_for
from aso.ftsd.protocols.root import copy_error, errno_of
from tests.ftsd.fts import PlainFts, plain_fts, transfer
from tests.xrootd_server import xrootd_server


def adler(data: bytes) -> str:
    return f"{zlib.adler32(data):08x}"


def blob(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def parts_in(folder) -> list:
    return [p for p in folder.rglob("*.part")]


@pytest.fixture(scope="module")
def site_a():
    with xrootd_server("a") as server:
        yield server


@pytest.fixture(scope="module")
def site_b():
    with xrootd_server("b") as server:
        yield server


@pytest.fixture
def fts(tmp_path):
    with plain_fts(tmp_path / "fts") as server:
        yield server


def _status(code: int, number: int = 0, message: str = "") -> XRootDStatus:
    return XRootDStatus({"status": 1, "code": code, "errno": number, "message": message, "shellcode": 54,
                         "error": True, "fatal": False, "ok": False})


def test_xrootd_errors_map_to_errno_and_retry_rule():
    denied = copy_error("DESTINATION", _status(400, 3010, "[ERROR] Server responded with an error: [3010] "
                                                        "Unable to create /d/x; permission denied\n"), "cannot create x")
    assert denied.reason == ("DESTINATION [13] cannot create x: Permission denied "
                             "([3010] Unable to create /d/x; permission denied)")
    assert not denied.recoverable
    missing = copy_error("SOURCE", _status(400, 3011), "cannot open x")
    assert missing.code == errno.ENOENT and not missing.recoverable
    assert errno_of(_status(400, 3009)) == errno.ENOSPC
    assert errno_of(_status(400, 3030)) == errno.EACCES
    assert errno_of(_status(400, 9999)) == errno.EIO
    for code, number in ((108, errno.ECONNREFUSED), (206, errno.ETIMEDOUT), (104, errno.ECONNRESET)):
        error = copy_error("SOURCE", _status(code), "cannot open x")
        assert error.code == number and error.recoverable, error.reason
    assert errno_of(_status(204)) == errno.EACCES and not copy_error("SOURCE", _status(204), "x").recoverable
    assert errno_of(_status(12, errno.ENOSPC)) == errno.ENOSPC
    assert copy_error("SOURCE", _status(108), "cannot open x").reason == "SOURCE [111] cannot open x: Connection refused"


@pytest.mark.parametrize(("url", "expected"), [
    ("root://h.example//store/x", ("root://h.example", "/store/x")),
    ("root://H.example:1094/store//y/z", ("root://h.example:1094", "/store/y/z")),
    ("root://[::1]:99//a%20b/c", ("root://[::1]:99", "/a b/c")),
])
def test_root_url_parts(url, expected):
    assert urls.root_parts(url) == expected
    assert urls.check_url(url) == url


@pytest.mark.parametrize(("url", "message"), [
    ("root://h//store/../etc/passwd", "'..' as a segment"),
    ("root://h//store/%2e%2e/etc/passwd", "'..' as a segment"),
    ("root://h//store/./x", "'.' as a segment"),
    ("root://h//store/x?svcClass=t1", "no '\\?' query"),
    ("root://h//store/x%3Fa", "contains '\\?'"),
    ("root://h//store/a%2Fb", "%2F"),
    ("root://h//store/a%00b", "control character"),
    ("root://h//store/", "names a folder"),
    ("root://u@h//store/x", "no user name"),
    ("root:///store/x", "has no host"),
])
def test_root_url_refused(url, message):
    with pytest.raises(urls.UrlError, match=message):
        urls.check_url(url)


def test_plugin_resumes_a_partial_file_and_reads_back_without_server_checksums():
    """The destination's partial file on a server that computes no checksums: a second
    attempt continues it from its size, the adler32 comes from reading it back, and the
    commit renames it; delete() removes the file once."""
    data = blob(3_000_000, 7)
    with xrootd_server("plain", checksums=False) as server:
        server.put("in/f.bin", data)
        server.mkdir("out")
        dst = destination_for(server.url_of("out/f.bin"), "9")
        assert dst.partial_size() == 0 and not dst.exists()
        dst.write(iter([data[:1_000_000]]), 0, lambda n: None)  # an attempt that stopped there
        assert dst.partial_size() == 1_000_000 and not dst.exists()
        assert dst._server_adler32(dst.part) is None  # the daemon has no checksum to give
        src = source_for(server.url_of("in/f.bin"))
        assert src.size() == len(data)
        assert dst.write(src.read_from(1_000_000, 256 * 1024), 1_000_000, lambda n: None) == len(data)
        src.close()
        assert dst.adler32() == adler(data)
        dst.commit(overwrite=False)
        assert (server.root / "out/f.bin").read_bytes() == data
        assert [p.name for p in (server.root / "out").iterdir()] == ["f.bin"]
        assert delete(server.url_of("out/f.bin")) is True
        assert delete(server.url_of("out/f.bin")) is False


def test_submission_refuses_a_root_url_that_climbs(fts):
    resp = fts.request("POST", "/jobs", json={"files": [transfer("root://h.example//store/a/../../etc/passwd",
                                                                 "root://h.example//store/b")]})
    assert resp.status_code == 400
    assert "files[0].sources[0]" in resp.json()["message"] and "'..'" in resp.json()["message"]


def test_copies_between_file_and_two_xrootd_sites(fts, site_a, site_b, tmp_path):
    """file:// -> root://, root:// -> file://, root:// -> root:// (two servers), checksums
    verified both ways; a corrupted submitted checksum fails without retry, leaving nothing."""
    local = blob(3_000_000, 1)
    remote = blob(11_000_000, 2)
    (tmp_path / "local.bin").write_bytes(local)
    site_a.put("t1/remote.bin", remote)
    site_a.put("t1/empty.bin", b"")
    out = tmp_path / "out"
    job_id = fts.submit([
        transfer((tmp_path / "local.bin").as_uri(), site_a.url_of("t1/in/deep/local.bin"), checksum=f"ADLER32:{adler(local)}"),
        transfer(site_a.url_of("t1/remote.bin"), (out / "remote.bin").as_uri(), checksum=f"adler32:{adler(remote)}"),
        transfer(site_a.url_of("t1/remote.bin"), site_b.url_of("t1/remote.bin"), checksum=f"ADLER32:{adler(remote)}",
                 filesize=len(remote)),
        transfer(site_a.url_of("t1/empty.bin"), site_b.url_of("t1/empty.bin")),
    ], verify_checksum="both")
    job = fts.wait(job_id)
    files = fts.files(job_id)
    assert job["job_state"] == "FINISHED", [(f["file_state"], f["reason"]) for f in files]
    assert (site_a.root / "t1/in/deep/local.bin").read_bytes() == local
    assert (out / "remote.bin").read_bytes() == remote
    assert (site_b.root / "t1/remote.bin").read_bytes() == remote
    assert (site_b.root / "t1/empty.bin").read_bytes() == b""
    assert [f["checksum"] for f in files] == [f"ADLER32:{adler(local)}", f"ADLER32:{adler(remote)}",
                                              f"ADLER32:{adler(remote)}", f"ADLER32:{adler(b'')}"]
    assert parts_in(site_a.root) == [] and parts_in(site_b.root) == [] and parts_in(out) == []

    wrong = f"{(zlib.adler32(remote) ^ 1) & 0xFFFFFFFF:08x}"
    bad = fts.submit([transfer(site_a.url_of("t1/remote.bin"), site_b.url_of("t1/bad.bin"), checksum=f"ADLER32:{wrong}")],
                     verify_checksum="both", retry=2)
    assert fts.wait(bad)["job_state"] == "FAILED"
    (failed,) = fts.files(bad)
    assert failed["reason"].startswith("SOURCE [5] Source and user-defined ADLER32 checksum do not match")
    assert failed["retry"] == 0
    assert not (site_b.root / "t1/bad.bin").exists() and parts_in(site_b.root) == []


def test_overwrite_off_then_on(fts, site_a, site_b):
    new, old = blob(500_000, 3), b"old contents"
    site_a.put("t2/f.bin", new)
    site_b.put("t2/f.bin", old)
    job_id = fts.submit([transfer(site_a.url_of("t2/f.bin"), site_b.url_of("t2/f.bin"))], retry=2)
    assert fts.wait(job_id)["job_state"] == "FAILED"
    (refused,) = fts.files(job_id)
    assert refused["reason"] == "DESTINATION [17] Destination file exists and overwrite is not enabled"
    assert refused["retry"] == 0
    assert (site_b.root / "t2/f.bin").read_bytes() == old
    job_id = fts.submit([transfer(site_a.url_of("t2/f.bin"), site_b.url_of("t2/f.bin"), checksum=f"ADLER32:{adler(new)}")],
                        overwrite=True, verify_checksum="target")
    assert fts.wait(job_id)["job_state"] == "FINISHED", fts.files(job_id)
    assert (site_b.root / "t2/f.bin").read_bytes() == new
    assert parts_in(site_b.root) == []


def test_permission_denied_is_not_retried(fts, site_a, site_b):
    """A folder the daemon may not write (and a source it may not read): FAILED at once,
    retry count 0 although the job allows retries, the reason naming the permission."""
    site_a.put("t3/f.bin", b"data")
    locked = site_b.root / "t3-locked"
    locked.mkdir(mode=0o555)  # not the daemon's, and read-only for anyone but root
    secret = site_a.put("t3/secret.bin", b"secret")
    os.chmod(secret, 0)
    job_id = fts.submit([transfer(site_a.url_of("t3/f.bin"), site_b.url_of("t3-locked/f.bin")),
                         transfer(site_a.url_of("t3/secret.bin"), site_b.url_of("t3/secret.bin"))], retry=3)
    assert fts.wait(job_id)["job_state"] == "FAILED"
    write, read = fts.files(job_id)
    for f, scope in ((write, "DESTINATION"), (read, "SOURCE")):
        assert f["file_state"] == "FAILED" and f["retry"] == 0, f
        assert f["reason"].startswith(f"{scope} [13] ") and "Permission denied" in f["reason"], f["reason"]
    assert fts.request("GET", f"/jobs/{job_id}/files/{write['file_id']}/retries").json() == []
    assert not (site_b.root / "t3/secret.bin").exists()


def test_missing_source_fails_at_once_and_an_unreachable_server_is_retried(fts, site_a, tmp_path):
    job_id = fts.submit([transfer(site_a.url_of("t4/none.bin"), (tmp_path / "out" / "none").as_uri())], retry=2)
    assert fts.wait(job_id)["job_state"] == "FAILED"
    (missing,) = fts.files(job_id)
    assert missing["reason"].startswith("SOURCE [2] cannot open root://") and missing["retry"] == 0
    # nothing listens on port 9: a connection error, which a retry may mend
    job_id = fts.submit([transfer("root://127.0.0.1:9//store/x", (tmp_path / "out" / "x").as_uri())],
                        retry=1, retry_delay=1)
    assert fts.wait(job_id, timeout=60)["job_state"] == "FAILED"
    (unreachable,) = fts.files(job_id)
    assert unreachable["reason"].startswith("SOURCE [111] cannot open root://127.0.0.1:9//store/x: Connection refused")
    assert unreachable["retry"] == 1


def test_killed_mid_copy_resumes_from_its_checkpoint(tmp_path):
    """SIGKILL of aso fts-server while it copies a large file from a slow XRootD site to
    another: after the restart the copy continues from the partial file on the destination
    server (not from zero), and the result is byte-identical."""
    # 32 MiB at 4 MiB/s: the plug-in reads 8 MiB at a time, so the first checkpoint comes
    # after about 2 s and the copy ends after about 8 s, leaving a wide window for the kill
    size = 32 * 1024 * 1024
    data = blob(size, 5)
    with xrootd_server("slow", rate=4 * 1024 * 1024) as slow, xrootd_server("dest") as dest:
        slow.put("big.bin", data)
        dest.mkdir("out")
        fts = PlainFts(tmp_path / "fts").start()
        try:
            job_id = fts.submit([transfer(slow.url_of("big.bin"), dest.url_of("out/big.bin"),
                                          checksum=f"ADLER32:{adler(data)}")], verify_checksum="target")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                parts = parts_in(dest.root)
                if parts and parts[0].stat().st_size > 5 * 1024 * 1024:
                    break
                time.sleep(0.05)
            # kill only once a checkpoint past 2 MiB is recorded (a fixed sleep was not
            # enough on a loaded machine: the restart then began from zero)
            while time.monotonic() < deadline:
                with sqlite3.connect(fts.db) as conn:
                    (recorded,) = conn.execute("SELECT MAX(transferred) FROM t_file").fetchone()
                if (recorded or 0) >= 2 * 1024 * 1024:
                    break
                time.sleep(0.05)
            fts.kill9()
            (part,) = parts_in(dest.root)
            written = part.stat().st_size
            assert 0 < written < size
            assert not (dest.root / "out/big.bin").exists()

            fts.start()
            job = fts.wait(job_id, timeout=60)
            assert job["job_state"] == "FINISHED", fts.files(job_id)
        finally:
            fts.stop()
        assert (dest.root / "out/big.bin").read_bytes() == data
        assert parts_in(dest.root) == []
        log = fts.log.read_text()
        assert "resuming from byte" in log
        resumed_at = int(log.split("resuming from byte ", 1)[1].split()[0])
        assert 2 * 1024 * 1024 <= resumed_at <= written
        assert f"resumed at {resumed_at}" in log
