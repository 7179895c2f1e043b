"""A test PKI in a temporary folder: CA folder, host certificate, users with proxies.

``build_pki(folder)`` returns a ``TestPki``; the session-wide ``pki`` fixture in conftest.py
builds one per test run (RSA key generation is the slow part, so tests share it and make their
own extra proxies with ``TestPki.proxy``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from aso.x509.pki import (
    CertificateAuthority,
    Credential,
    make_ca,
    make_host_cert,
    make_proxy,
    make_user_cert,
)


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
