"""aso's HTTPS server (aso.ftsd.tls) with the identity and delegation routes: client certificates verified against the CA folder, RFC 3820
proxies accepted, the user named by the end-entity DN."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
import requests

from aso.ftsd.identity import delegation_id
from aso.ftsd.tls import make_https_server
from aso.x509.pki import make_ca, make_proxy, make_user_cert
from tests.pki import build_pki, x509_test_server

BASE_ID = uuid.UUID("01874efb-4735-4595-bc9c-591aef8240c9")


@pytest.fixture(scope="module")
def server(pki, tmp_path_factory):
    with x509_test_server(pki, tmp_path_factory.mktemp("https")) as srv:
        yield srv


def _whoami(server, cert, key=None, path="/whoami", **kw):
    return requests.get(server.url + path, cert=(str(cert), str(key or cert)), verify=str(server.ca_dir), timeout=30, **kw)


def test_whoami_has_every_fts3_field(server, pki):
    resp = _whoami(server, pki.alice.proxy_path)
    assert resp.status_code == 200
    dlg = delegation_id(pki.alice.dn)
    assert resp.json() == {
        "user_dn": pki.alice.dn,
        "dn": [pki.alice.dn],
        "base_id": str(BASE_ID),
        "voms_cred": [],
        "vos": [dlg],
        "vos_id": [str(uuid.uuid5(BASE_ID, dlg))],
        "roles": [],
        "level": {"transfer": "vo", "deleg": "vo"},
        "delegation_id": dlg,
        "method": "certificate",
        "is_root": False,
    }


def test_user_is_the_end_entity_whatever_the_proxy_depth(server, pki, tmp_path):
    alice = pki.alice
    _, p2_path = pki.proxy(alice.proxy, tmp_path / "p2.pem")
    p3, p3_path = pki.proxy(make_proxy(alice.proxy), tmp_path / "p3.pem")
    answers = [
        _whoami(server, alice.cert_path, alice.key_path).json(),
        _whoami(server, alice.proxy_path).json(),
        _whoami(server, p2_path).json(),
        _whoami(server, p3_path).json(),
    ]
    assert {(a["user_dn"], a["delegation_id"]) for a in answers} == {(alice.dn, delegation_id(alice.dn))}
    bob = _whoami(server, pki.bob.proxy_path).json()
    assert bob["user_dn"] == pki.bob.dn and bob["delegation_id"] != answers[0]["delegation_id"]
    # the certificate the client presented, leaf first
    pem = _whoami(server, p3_path, path="/whoami/certificate").text
    assert pem.count("BEGIN CERTIFICATE") == 4 and pem.startswith(p3.cert_pem().decode())


def test_double_slash_paths_as_the_official_client_sends(server, pki):
    for path in ("//whoami", "///whoami"):
        resp = _whoami(server, pki.alice.proxy_path, path=path)
        assert resp.status_code == 200 and resp.json()["user_dn"] == pki.alice.dn


def test_no_client_certificate_is_401(server):
    resp = requests.get(server.url + "/whoami", verify=str(server.ca_dir), timeout=30)
    assert resp.status_code == 401
    assert "A valid X509 certificate or proxy is needed" in resp.text


def test_untrusted_or_expired_client_is_refused_in_the_handshake(server, pki, tmp_path):
    stranger_ca = make_ca(tmp_path / "elsewhere", dn="/DC=org/DC=elsewhere/CN=Stranger CA")
    mallory = make_proxy(make_user_cert(stranger_ca, "mallory"))
    mallory_path = mallory.write_proxy(tmp_path / "mallory.pem")
    _, expired_path = pki.proxy(pki.alice.cert, tmp_path / "expired.pem", expired=True)
    for path in (mallory_path, expired_path):
        with pytest.raises(requests.exceptions.SSLError):
            _whoami(server, path)
    # and the server keeps serving the others
    assert _whoami(server, pki.alice.proxy_path).status_code == 200


def test_server_certificate_names_localhost_and_127_0_0_1(server, pki):
    port = server.port
    for host in ("localhost", "127.0.0.1"):
        resp = requests.get(f"https://{host}:{port}/whoami", cert=(str(pki.bob.proxy_path),) * 2, verify=str(pki.ca_dir), timeout=30)
        assert resp.json()["user_dn"] == pki.bob.dn


def test_make_https_server_checks_its_files(tmp_path, pki):
    with pytest.raises(FileNotFoundError, match="--cert"):
        make_https_server(None, "127.0.0.1", 0, cert=tmp_path / "none.pem", key=pki.host_key_path, ca_dir=pki.ca_dir)
    with pytest.raises(FileNotFoundError, match="--ca-dir"):
        make_https_server(None, "127.0.0.1", 0, cert=pki.host_cert_path, key=pki.host_key_path, ca_dir=tmp_path / "nope")


def test_chain_with_intermediate_ca(tmp_path):
    """A user certificate from an intermediate CA, with the intermediate sent by the client."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    from aso.x509.pki import CertificateAuthority, Credential, make_name, new_key

    pki = build_pki(tmp_path / "pki", users=())
    key = new_key()
    now = dt.datetime.now(dt.UTC)
    sub = (
        x509.CertificateBuilder()
        .subject_name(make_name([("DC", "org"), ("DC", "aso-test"), ("CN", "ASO Sub CA")]))
        .issuer_name(pki.ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(pki.ca.key, hashes.SHA256())
    )
    sub_ca = CertificateAuthority(Credential(sub, key, ()), pki.ca_dir)
    user = make_user_cert(sub_ca, "ivan")
    user = Credential(user.cert, user.key, (sub,))
    proxy = make_proxy(user)
    path = proxy.write_proxy(tmp_path / "ivan.pem")
    with x509_test_server(pki, tmp_path) as srv:
        who = requests.get(srv.url + "/whoami", cert=(str(path),) * 2, verify=str(pki.ca_dir), timeout=30).json()
    assert who["user_dn"] == "/DC=org/DC=aso-test/OU=Users/CN=ivan"


def test_tls_layer_hands_the_verified_chain_to_any_wsgi_app(pki, tmp_path):
    """make_https_server on its own: what reaches the application's environ."""
    import json
    import threading

    from tests.procs import free_port

    def app(environ, start_response):
        keys = sorted(k for k in environ if k.startswith("SSL_CLIENT_"))
        body = json.dumps({k: environ[k] for k in keys} | {"PATH_INFO": environ["PATH_INFO"]}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    port = free_port()
    srv = make_https_server(app, "127.0.0.1", port, cert=pki.host_cert_path, key=pki.host_key_path, ca_dir=pki.ca_dir, threads=2)
    srv.prepare()
    thread = threading.Thread(target=srv.serve, daemon=True)
    thread.start()
    try:
        _, p2_path = pki.proxy(pki.alice.proxy, tmp_path / "p2.pem")
        with requests.Session() as session:
            session.cert = (str(p2_path), str(p2_path))
            # verify per request: a Session's own verify loses to REQUESTS_CA_BUNDLE
            first = session.get(f"https://localhost:{port}//jobs/x", verify=str(pki.ca_dir), timeout=30).json()
            again = session.get(f"https://localhost:{port}/whoami", verify=str(pki.ca_dir), timeout=30).json()
        anonymous = requests.get(f"https://localhost:{port}/", verify=str(pki.ca_dir), timeout=30).json()
    finally:
        srv.stop()
        thread.join(10)
    assert first["PATH_INFO"] == "/jobs/x"
    assert first["SSL_CLIENT_VERIFY"] == "SUCCESS"
    assert first["SSL_CLIENT_S_DN"].startswith(pki.alice.proxy.dn + "/CN=")
    assert first["SSL_CLIENT_I_DN"] == pki.alice.proxy.dn
    # proxy of proxy, proxy, user certificate; the trusted root is not repeated
    assert first["SSL_CLIENT_CERT_CHAIN_1"] == pki.alice.cert.cert_pem().decode()
    assert "SSL_CLIENT_CERT_CHAIN_2" not in first
    assert again["SSL_CLIENT_S_DN"] == first["SSL_CLIENT_S_DN"]
    assert anonymous == {"SSL_CLIENT_VERIFY": "NONE", "PATH_INFO": "/"}
