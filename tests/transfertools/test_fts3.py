"""The fts3 transfer tool (official client library) against a real aso fts-server, over
HTTPS with test proxies and over plain HTTP."""

from __future__ import annotations

import datetime as dt
import os
import time

import pytest
import requests

from aso.ftsd.identity import delegation_id
from aso.transfertools import JobOptions, Transfer, TransferToolError, open_transfer_tool
from tests.ftsd.fts import plain_fts
from tests.ftsd.storage import http_storage
from tests.pki import fts_server_https
from tests.procs import free_port

H48, H24 = dt.timedelta(hours=48), dt.timedelta(hours=24)


@pytest.fixture(scope="module")
def https_fts(pki, tmp_path_factory):
    with fts_server_https(pki, tmp_path_factory.mktemp("fts-tool"), roots=[tmp_path_factory.getbasetemp()]) as srv:
        yield srv


def wait_terminal(tool, job_id, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        result = tool.bulk_query([job_id])[job_id]
        if result.terminal or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def transfers(tmp_path, n, prefix="f"):
    out = []
    for i in range(n):
        src = tmp_path / f"{prefix}{i}"
        src.write_bytes(os.urandom(1000 + i))
        out.append(Transfer(id=f"{i:056x}", source=src.as_uri(), destination=(tmp_path / "out" / f"{prefix}{i}").as_uri(),
                            filesize=1000 + i))
    return out


def test_delegate_submit_idempotently_and_bulk_query(https_fts, pki, tmp_path):
    user = pki.add_user("tina")
    tool = open_transfer_tool("fts3", https_fts.url, str(user.proxy_path), ca_dir=str(https_fts.ca_dir))
    assert tool.delegate(H48, H24) == delegation_id(user.dn)
    # delegated: the server holds a credential for the user now
    cred = requests.get(f"{https_fts.url}/delegation/{delegation_id(user.dn)}", cert=(str(user.proxy_path),) * 2,
                        verify=str(https_fts.ca_dir), timeout=30).json()
    assert cred and cred["termination_time"]
    assert tool.delegate(H48, H24) == delegation_id(user.dn)  # enough left: nothing to do

    files = transfers(tmp_path, 3)
    job_id = tool.submit(files, JobOptions(metadata={"issuer": "ASO"}), sid="chunk-a")
    assert job_id == tool.expected_job_id("chunk-a")
    # a rerun after a crash submits the same chunk again: same job, nothing new
    assert tool.submit(files, JobOptions(), sid="chunk-a") == job_id

    result = wait_terminal(tool, job_id)
    assert result.state == "FINISHED"
    assert sorted(f.transfer_id for f in result.files) == sorted(t.id for t in files)
    assert all(f.state == "FINISHED" and f.reason is None for f in result.files)
    for t in files:
        assert (tmp_path / "out" / t.source.rsplit("/", 1)[1]).exists()

    mixed = tool.bulk_query([job_id, "00000000-0000-0000-0000-000000000000"])
    assert mixed[job_id].state == "FINISHED"
    lost = mixed["00000000-0000-0000-0000-000000000000"]
    assert lost.state == "LOST" and lost.terminal and "404" in lost.reason
    assert tool.bulk_query(["11111111-0000-0000-0000-000000000000"])["11111111-0000-0000-0000-000000000000"].state == "LOST"


def test_bulk_query_in_chunks(https_fts, pki, tmp_path):
    user = pki.add_user("uma")
    tool = open_transfer_tool("fts3", https_fts.url, str(user.proxy_path), ca_dir=str(https_fts.ca_dir), bulk_size=2)
    tool.delegate(H48, H24)
    ids = [tool.submit([t], JobOptions(), sid=f"one-{i}") for i, t in enumerate(transfers(tmp_path, 5))]
    deadline = time.monotonic() + 30
    while True:
        results = tool.bulk_query(ids)
        if all(r.terminal for r in results.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert set(results) == set(ids) and {r.state for r in results.values()} == {"FINISHED"}


def test_cancel_a_job_and_some_files(tmp_path):
    with plain_fts(tmp_path / "fts") as fts, http_storage(tmp_path / "web") as storage:
        storage.behaviour.gate.clear()
        tool = open_transfer_tool("fts3", fts.url, "/nonexistent-proxy-over-plain-http")
        assert tool.delegate(H48, H24) is None  # plain HTTP: one local user, nothing to delegate
        files = []
        for i in range(3):
            (storage.root / f"s{i}").write_bytes(b"x" * 100)
            files.append(Transfer(id=f"{i:056x}", source=f"{storage.url}/s{i}", destination=(tmp_path / f"d{i}").as_uri()))
        whole = tool.submit(files[:1], JobOptions(), sid="whole")
        partial = tool.submit(files[1:], JobOptions(), sid="partial")
        tool.cancel(whole)
        fid = fts.files(partial)[0]["file_id"]
        tool.cancel(partial, [fid])
        tool.cancel("22222222-0000-0000-0000-000000000000")  # unknown: nothing to do, no error
        storage.behaviour.gate.set()
        assert wait_terminal(tool, whole).state == "CANCELED"
        done = wait_terminal(tool, partial)
        assert done.state == "FINISHEDDIRTY"
        assert sorted(f.state for f in done.files) == ["CANCELED", "FINISHED"]


def test_service_down_is_a_transient_error(tmp_path):
    tool = open_transfer_tool("fts3", f"http://127.0.0.1:{free_port()}", "/none")
    with pytest.raises(TransferToolError) as err:
        tool.bulk_query(["33333333-0000-0000-0000-000000000000"])
    assert err.value.transient
    with pytest.raises(TransferToolError) as err:
        tool.submit(transfers(tmp_path, 1), JobOptions(), sid="x")
    assert err.value.transient and "cannot reach FTS" in str(err.value)


def test_cancel_with_an_empty_file_list_cancels_nothing(tmp_path):
    """An empty list of file ids must not become ``DELETE /jobs/{id}`` (the whole job)."""
    with plain_fts(tmp_path / "fts") as fts, http_storage(tmp_path / "web") as storage:
        storage.behaviour.gate.clear()
        tool = open_transfer_tool("fts3", fts.url, "/nonexistent-proxy-over-plain-http")
        (storage.root / "s").write_bytes(b"x" * 100)
        job = tool.submit([Transfer(id=f"{7:056x}", source=f"{storage.url}/s", destination=(tmp_path / "d").as_uri())],
                          JobOptions(), sid="keep")
        tool.cancel(job, [])
        tool.cancel(job, iter(()))
        storage.behaviour.gate.set()
        done = wait_terminal(tool, job)
        assert done.state == "FINISHED", done
        assert (tmp_path / "d").read_bytes() == b"x" * 100


def test_a_bad_reply_is_a_transient_error_not_a_crash(tmp_path):
    """An endpoint answering 200 with something that is not FTS's JSON (a proxy's error
    page, a truncated body, a list of strings): every call says so as a transient error,
    so the monitor keeps its entries and polls again next pass."""
    import http.server
    import threading

    bodies = iter([b"<html>gateway</html>", b'["not", "jobs"]', b"<html>gateway</html>", b"{}"])

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            body = next(bodies)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        tool = open_transfer_tool("fts3", f"http://127.0.0.1:{server.server_port}", "/none")
        for _ in range(2):  # not JSON, then JSON of the wrong shape
            with pytest.raises(TransferToolError) as err:
                tool.bulk_query(["33333333-0000-0000-0000-000000000000"])
            assert err.value.transient and "status from" in str(err.value)
        with pytest.raises(TransferToolError) as err:
            tool.whoami()
        assert err.value.transient and "not JSON" in str(err.value)
    finally:
        server.shutdown()
        server.server_close()
