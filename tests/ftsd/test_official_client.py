"""The official fts3 client's own command-line tools against a real aso fts-server over
HTTPS, as a user would run them: X509_USER_PROXY for the user, X509_CERT_DIR for the CA."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import os
import re
import subprocess
import threading
import time

import pytest
import requests

from aso.ftsd.identity import delegation_id
from aso.x509.pki import make_proxy
from tests.pki import fts_server_https, sign_delegation_request
from tests.procs import free_port

TERMINAL = {"FINISHED", "FINISHEDDIRTY", "FAILED", "CANCELED"}


@pytest.fixture(scope="module")
def server(pki, tmp_path_factory):
    with fts_server_https(pki, tmp_path_factory.mktemp("fts-official"), roots=[tmp_path_factory.getbasetemp()]) as srv:
        yield srv


def fts(tool: str, server, user, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "X509_USER_PROXY": str(user.proxy_path), "X509_CERT_DIR": str(server.ca_dir)}
    env.pop("X509_USER_CERT", None)
    env.pop("X509_USER_KEY", None)
    res = subprocess.run([tool, "-s", server.url, *args], capture_output=True, text=True, env=env, timeout=timeout)
    assert res.returncode == 0, f"{tool} {args}: rc={res.returncode}\n{res.stdout}\n{res.stderr}\n" + server.log.read_text()[-3000:]
    return res


def wait_state(server, user, job_id: str, states: set[str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = json.loads(fts("fts-rest-transfer-status", server, user, "-j", job_id).stdout)
        if status["job_state"] in states or time.monotonic() > deadline:
            return status
        time.sleep(0.3)


def test_whoami_and_delegate(server, pki):
    user = pki.add_user("oscar")
    out = fts("fts-rest-whoami", server, user).stdout
    assert f"User DN: {user.dn}" in out
    assert delegation_id(user.dn) in out
    who = json.loads(fts("fts-rest-whoami", server, user, "-j").stdout)
    assert who["delegation_id"] == delegation_id(user.dn)
    out = fts("fts-rest-delegate", server, user).stdout + fts("fts-rest-delegate", server, user, "-f").stderr
    assert delegation_id(user.dn) in out


def test_submit_status_list_and_cancel(server, pki, tmp_path):
    user = pki.add_user("ivan")
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(256 * 1024))
    dst = tmp_path / "out" / "data.bin"
    # submit delegates on its own when the server has no credential for the user
    out = fts("fts-rest-transfer-submit", server, user, f"file://{src}", f"file://{dst}").stdout
    job_id = out.strip().splitlines()[-1].split()[-1]
    assert re.fullmatch(r"[0-9a-f-]{36}", job_id), out
    status = wait_state(server, user, job_id, TERMINAL)
    assert status["job_state"] == "FINISHED", status
    assert dst.read_bytes() == src.read_bytes()
    text = fts("fts-rest-transfer-status", server, user, job_id).stdout
    assert f"Request ID: {job_id}" in text and "Status: FINISHED" in text

    # a copy that cannot finish on its own: the source server holds every GET until released
    release = threading.Event()

    class Stalling(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(200)
            self.send_header("Content-Length", "10")
            self.end_headers()

        def do_GET(self):
            release.wait(60)
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    port = free_port()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Stalling)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        out = fts("fts-rest-transfer-submit", server, user, f"http://127.0.0.1:{port}/slow", f"file://{tmp_path / 'slow.out'}").stdout
        slow_id = out.strip().splitlines()[-1].split()[-1]
        listing = fts("fts-rest-transfer-list", server, user).stdout
        assert f"Request ID: {slow_id}" in listing and user.dn in listing
        assert job_id not in listing  # finished jobs are not listed by default
        other = pki.add_user("judy")
        assert slow_id not in fts("fts-rest-transfer-list", server, other).stdout

        cancel = fts("fts-rest-transfer-cancel", server, user, slow_id).stdout
        assert "CANCELED" in cancel
        release.set()
        assert wait_state(server, user, slow_id, TERMINAL)["job_state"] == "CANCELED"
        assert not (tmp_path / "slow.out").exists()
        assert slow_id not in fts("fts-rest-transfer-list", server, user).stdout
    finally:
        release.set()
        httpd.shutdown()
        httpd.server_close()


# -- the service's own rules over HTTPS with plain requests --------------------------------


def _get(server, user_proxy, path):
    return requests.get(server.url + path, cert=(str(user_proxy),) * 2, verify=str(server.ca_dir), timeout=30)


def _submit(server, proxy, tmp_path, name="src"):
    src = tmp_path / name
    src.write_bytes(os.urandom(1000))
    body = {"files": [{"sources": [f"file://{src}"], "destinations": [f"file://{tmp_path / (name + '.out')}"]}]}
    return requests.post(f"{server.url}/jobs", json=body, cert=(str(proxy), str(proxy)), verify=str(server.ca_dir), timeout=30)


def _delegate_chain(server, user, chain_cred, proxy_path, hours):
    dlg = delegation_id(user.dn)
    csr = _get(server, proxy_path, f"/delegation/{dlg}/request").text
    resp = requests.put(f"{server.url}/delegation/{dlg}/credential", data=sign_delegation_request(csr, chain_cred, hours=hours),
                        cert=(str(proxy_path), str(proxy_path)), verify=str(server.ca_dir), timeout=30)
    assert resp.status_code == 201, resp.text


def test_submit_needs_a_usable_delegation(server, pki, tmp_path):
    import time

    user = pki.add_user("peggy")
    proxy = user.proxy_path
    resp = _submit(server, proxy, tmp_path)
    assert resp.status_code == 419
    assert resp.json() == {"status": "419 Authentication Timeout", "message": f'No delegation found for "{user.dn}"'}

    # delegated from a proxy with 30 minutes left
    _delegate_chain(server, user, make_proxy(user.cert, hours=0.5), proxy, hours=48)
    resp = _submit(server, proxy, tmp_path)
    assert resp.status_code == 419 and "less than one hour left" in resp.json()["message"]

    # delegated from a proxy that ends in two seconds, then expired
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    brief = make_proxy(user.cert, not_before=now - dt.timedelta(minutes=5), not_after=now + dt.timedelta(seconds=2))
    _delegate_chain(server, user, brief, proxy, hours=48)
    time.sleep(max(0.0, (brief.cert.not_valid_after_utc - dt.datetime.now(dt.UTC)).total_seconds()) + 1.2)
    resp = _submit(server, proxy, tmp_path)
    assert resp.status_code == 419 and "expired" in resp.json()["message"] and "seconds ago" in resp.json()["message"]

    _delegate_chain(server, user, user.proxy, proxy, hours=48)
    resp = _submit(server, proxy, tmp_path)
    assert resp.status_code == 200, resp.text
    assert set(resp.json()) == {"job_id"}


def test_another_users_job_is_forbidden(server, pki, tmp_path):
    user, other = pki.add_user("frank"), pki.add_user("grace")
    _delegate_chain(server, user, user.proxy, user.proxy_path, hours=48)
    job_id = _submit(server, user.proxy_path, tmp_path).json()["job_id"]
    assert _get(server, user.proxy_path, f"/jobs/{job_id}").status_code == 200
    resp = _get(server, other.proxy_path, f"/jobs/{job_id}")
    assert resp.status_code == 403
    cancel = requests.delete(f"{server.url}/jobs/{job_id}", cert=(str(other.proxy_path),) * 2, verify=str(server.ca_dir), timeout=30)
    assert cancel.status_code == 403
    assert _get(server, user.proxy_path, f"/jobs/{job_id}").json()["job_state"] != "CANCELED"
