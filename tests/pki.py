"""A test PKI in a temporary folder: CA folder, host certificate, users with proxies.

``build_pki(folder)`` returns a ``TestPki``; the session-wide ``pki`` fixture in conftest.py
builds one per test run (RSA key generation is the slow part, so tests share it and make their
own extra proxies with ``TestPki.proxy``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from aso.x509.pki import (
    INHERIT_ALL_PROXY_CERT_INFO,
    CertificateAuthority,
    Credential,
    make_ca,
    make_host_cert,
    make_proxy,
    make_user_cert,
)
from aso.x509.proxy import PROXY_CERT_INFO_OID
from tests.procs import Service, aso_command, free_port


@dataclass
class TestUser:
    name: str
    cert: Credential
    cert_path: Path
    key_path: Path
    #: a 12 h RFC 3820 proxy of the user certificate, and its file (X509_USER_PROXY layout)
    proxy: Credential
    proxy_path: Path

    @property
    def dn(self) -> str:
        return self.cert.dn


@dataclass
class TestPki:
    __test__ = False  # not a pytest test class

    root: Path
    ca: CertificateAuthority
    ca_dir: Path
    ca_key_path: Path
    host: Credential
    host_cert_path: Path
    host_key_path: Path
    users: dict[str, TestUser] = field(default_factory=dict)

    @property
    def alice(self) -> TestUser:
        return self.users["alice"]

    @property
    def bob(self) -> TestUser:
        return self.users["bob"]

    def add_user(self, name: str, **cert_options) -> TestUser:
        cert = make_user_cert(self.ca, name, **cert_options)
        folder = self.root / "users" / name
        cert_path, key_path = cert.write_cert_and_key(folder / "usercert.pem", folder / "userkey.pem")
        proxy = make_proxy(cert, hours=12)
        user = TestUser(name, cert, cert_path, key_path, proxy, proxy.write_proxy(folder / "proxy.pem"))
        self.users[name] = user
        return user

    def proxy(
        self,
        issuer: Credential,
        path: Path,
        *,
        hours: float = 12,
        expired: bool = False,
    ) -> tuple[Credential, Path]:
        """A fresh proxy of ``issuer`` written to ``path``; ``expired`` makes one that ended a
        minute ago."""
        if expired:
            now = dt.datetime.now(dt.UTC).replace(microsecond=0)
            cred = make_proxy(issuer, not_before=now - dt.timedelta(hours=2), not_after=now - dt.timedelta(minutes=1))
        else:
            cred = make_proxy(issuer, hours=hours)
        return cred, cred.write_proxy(path)


def build_pki(root: Path, users: tuple[str, ...] = ("alice", "bob")) -> TestPki:
    root = Path(root)
    ca_dir = root / "certificates"
    ca = make_ca(ca_dir, key_path=root / "ca-key.pem")
    host = make_host_cert(ca, "localhost")
    host_cert, host_key = host.write_cert_and_key(root / "hostcert.pem", root / "hostkey.pem")
    pki = TestPki(root, ca, ca_dir, root / "ca-key.pem", host, host_cert, host_key)
    for name in users:
        pki.add_user(name)
    return pki


def sign_delegation_request(csr_pem: str | bytes, issuer: Credential, *, hours: float = 12) -> bytes:
    """What a delegating client PUTs: a proxy of ``issuer`` for the CSR's key (subject =
    issuer + CN=<unix time>, serial copied, proxyCertInfo critical inheritAll, signed by the
    issuer's key), followed by the issuer certificate and its chain."""
    csr = x509.load_pem_x509_csr(csr_pem.encode() if isinstance(csr_pem, str) else csr_pem)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    subject = x509.Name([*issuer.cert.subject.rdns,
                         x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, str(int(time.time())))])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject)
        .public_key(csr.public_key())
        .serial_number(issuer.cert.serial_number)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(hours=hours))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.UnrecognizedExtension(PROXY_CERT_INFO_OID, INHERIT_ALL_PROXY_CERT_INFO), critical=True)
        .sign(issuer.key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM) + issuer.cert_pem() + issuer.chain_pem()


@dataclass
class HttpsFtsServer:
    service: Service
    url: str
    ca_dir: Path
    db: Path
    log: Path


@contextlib.contextmanager
def fts_server_https(pki: TestPki, folder: Path, *extra: str, roots: list[Path] | None = None) -> Iterator[HttpsFtsServer]:
    """A real ``aso fts-server`` over HTTPS with the PKI's host certificate and CA folder.
    ``roots``: the folders file:// URLs may use (``--root``); default: the folder above ``folder``."""
    port = free_port()
    db, log = folder / "fts.db", folder / "fts-server.log"
    roots = [folder.parent] if roots is None else roots
    args = aso_command(
        "fts-server", "--host", "127.0.0.1", "--port", str(port), "--db", str(db),
        "--cert", str(pki.host_cert_path), "--key", str(pki.host_key_path), "--ca-dir", str(pki.ca_dir),
        *[a for r in roots for a in ("--root", str(r))], *extra,
    )
    service = Service(args, port, log, cwd=str(folder))
    service.start()
    try:
        yield HttpsFtsServer(service, f"https://localhost:{port}", pki.ca_dir, db, log)
    finally:
        service.stop()


def x509_test_app(db_path: Path):
    """The X.509 half of the FTS service on its own: aso's delegation blueprint, credential
    store and identity_from_environ on a bare Flask app, wired the way the service's app wires
    them. ``GET /`` answers the version document the official client reads when it connects
    (it is the service's, which this app does not have)."""
    from flask import Flask, g, jsonify, request

    from aso.ftsd.credentials_store import CredentialStore
    from aso.ftsd.delegation import bp
    from aso.ftsd.errors import FtsHttpError
    from aso.ftsd.identity import identity_from_environ

    app = Flask("x509-test")
    app.extensions["aso_credentials"] = CredentialStore(db_path)
    app.register_blueprint(bp)

    @app.before_request
    def _identify():
        g.identity = identity_from_environ(request.environ)

    @app.errorhandler(FtsHttpError)
    def _fts_error(exc: FtsHttpError):
        return jsonify(exc.body()), exc.status

    @app.get("/")
    def _versions():
        version = {"major": 3, "minor": 13, "patch": 4}
        return jsonify({"delegation": {"major": 1, "minor": 0, "patch": 0}, "api": version, "core": version, "schema": version})

    return app


@dataclass
class HttpsTestServer:
    url: str
    ca_dir: Path
    db: Path
    port: int


@contextlib.contextmanager
def x509_test_server(pki: TestPki, folder: Path) -> Iterator[HttpsTestServer]:
    """``x509_test_app`` served by aso's HTTPS server (make_https_server) in a thread."""
    import threading

    from aso.ftsd.tls import make_https_server

    port = free_port()
    db = folder / "credentials.db"
    srv = make_https_server(x509_test_app(db), "127.0.0.1", port, cert=pki.host_cert_path, key=pki.host_key_path,
                            ca_dir=pki.ca_dir, threads=4)
    srv.prepare()
    thread = threading.Thread(target=srv.serve, daemon=True, name=f"https-{port}")
    thread.start()
    try:
        yield HttpsTestServer(f"https://localhost:{port}", pki.ca_dir, db, port)
    finally:
        srv.stop()
        thread.join(10)
