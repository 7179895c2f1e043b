"""User proxies from MyProxy, retrieved as CRAB's services do.

The user stored a credential with no passphrase (``myproxy-init -n``) that the service may
retrieve (``-Z <service DN>``); the service authenticates with its own certificate as a
*trusted retriever* and asks for the credential under CRAB's login name:
``sha1(user DN + "_" + account)`` where account is the host of the CRAB REST server
(reference crab-aso.md §4.3), or ``sha1(user DN)`` when no account is configured.

The key pair of the new proxy is made here; MyProxy signs our request and returns the
proxy certificate and its chain, which are written with the key in X509_USER_PROXY order
(certificate, key, chain) to the cache (mode 0600).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from aso.credentials.base import NoProxy, ProxySource, check_proxy, write_private

#: RSA size of retrieved proxies (MyProxy's client defaults to 4096, which costs ~0.5 s per user)
KEY_BITS = 2048


def crab_credential_name(dn: str, account: str = "") -> str:
    """The MyProxy login name CRAB stores a user's credential under."""
    text = f"{dn}_{account}" if account else dn
    return hashlib.sha1(text.encode()).hexdigest()


class MyProxySource(ProxySource):
    def __init__(
        self,
        *,
        server: str,
        port: int,
        service_cert: str | os.PathLike,
        service_key: str | os.PathLike,
        ca_dir: str | os.PathLike,
        user_dns: dict[str, str],
        cache_dir: str | os.PathLike,
        account: str = "",
        lifetime: int = 168 * 3600,
        min_time_left: int = 3600,
    ):
        super().__init__(cache_dir, min_time_left)
        self.server, self.port = server, int(port)
        self.service_cert, self.service_key = str(service_cert), str(service_key)
        self.ca_dir = str(ca_dir)
        self.user_dns = dict(user_dns)
        self.account = account
        self.lifetime = int(lifetime)

    @classmethod
    def from_config(cls, config) -> MyProxySource:
        from aso.errors import ConfigError

        c = config.credentials
        for name in ("service_cert", "service_key", "ca_dir"):
            if not getattr(c, name):
                raise ConfigError(f"credentials.{name}: required by the myproxy source")
        return cls(server=c.myproxy_server, port=c.myproxy_port, service_cert=c.service_cert, service_key=c.service_key,
                   ca_dir=c.ca_dir, user_dns=c.user_dns, cache_dir=c.cache_dir, account=c.myproxy_account,
                   lifetime=c.myproxy_lifetime, min_time_left=c.min_time_left)

    def login_name(self, username: str) -> str:
        dn = self.user_dns.get(username)
        if not dn:
            raise NoProxy(username, "no certificate DN configured for this user (credentials.user_dns)")
        return crab_credential_name(dn, self.account)

    def fetch(self, username: str) -> Path:
        login = self.login_name(username)
        where = f"MyProxy {self.server}:{self.port}, login {login}"
        try:
            pem = self._retrieve(login)
        except NoProxy:
            raise
        except Exception as exc:  # the client raises many kinds: socket, SSL, protocol errors
            raise NoProxy(username, f"{where}: {_describe(exc)}") from None
        check_proxy(pem, username, self.min_time_left, f"the proxy from {where}")
        target = self.cache_path(username)
        write_private(target, pem)
        return target

    def _retrieve(self, login: str) -> bytes:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from myproxy.client import MyProxyClient

        key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
        # MyProxy takes the subject from the stored credential; the request only carries the key.
        request = (x509.CertificateSigningRequestBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "proxy")]))
                   .sign(key, hashes.SHA256()))
        client = MyProxyClient(hostname=self.server, port=self.port, caCertDir=self.ca_dir,
                               proxyCertLifetime=self.lifetime, proxyCertMaxLifetime=self.lifetime)
        chain = client.logon(login, None, lifetime=self.lifetime, certReq=request.public_bytes(serialization.Encoding.DER),
                             sslCertFile=self.service_cert, sslKeyFile=self.service_key)
        certs = [c if isinstance(c, bytes) else c.encode() for c in chain]
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption())
        return certs[0] + key_pem + b"".join(certs[1:])


def _describe(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, ConnectionRefusedError) or "Connection refused" in text:
        return "connection refused (is the MyProxy server running?)"
    return f"{type(exc).__name__}: {text}"[:500]
