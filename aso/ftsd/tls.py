"""HTTPS for the embedded FTS service: cheroot + pyOpenSSL with X.509 client certificates.

Clients are verified against a grid CA folder with RFC 3820 proxies allowed, and the whole
verified chain is handed to the WSGI application under mod_ssl's names (SSL_CLIENT_VERIFY,
SSL_CLIENT_CERT, SSL_CLIENT_CERT_CHAIN_n, SSL_CLIENT_S_DN, SSL_CLIENT_I_DN), so that
``identity_from_environ`` can name the user by the end-entity DN as FTS3 does. A client without a
certificate still connects (FTS3's Apache says ``SSLVerifyClient optional``); the application
answers it 401.

The stdlib ``ssl`` adapter of cheroot cannot be used: Python 3.11 exposes only the peer's leaf
certificate, and the leaf of a proxy is the proxy, not the user.
"""

from __future__ import annotations

import logging
import os
import re
import select
import time
from pathlib import Path

from cheroot import server as cheroot_server
from cheroot import wsgi
from cheroot.ssl.pyopenssl import pyOpenSSLAdapter
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto

from aso.ftsd.identity import SSL_CLIENT_CERT, SSL_CLIENT_CERT_CHAIN, SSL_CLIENT_VERIFY
from aso.x509.proxy import dn_slash

log = logging.getLogger(__name__)

#: FTS3's Apache configuration allows this many certificates (proxies of proxies add up).
VERIFY_DEPTH = 10


class _PatientConnection:
    """An SSL.Connection whose ``recv_into`` waits for data instead of raising WantReadError.

    cheroot reads request bodies through ``socket.SocketIO.readinto``, which calls
    ``recv_into`` on the connection directly; pyOpenSSL on a socket with a timeout raises
    WantReadError when the next TLS record has not arrived yet, and cheroot answered 500
    for bodies that spanned records on kept-alive connections."""

    def __init__(self, conn: SSL.Connection, timeout: float | None):
        self._conn = conn
        self._timeout = timeout or 30.0

    def recv_into(self, buffer, nbytes: int = 0, flags: int = 0) -> int:
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                return self._conn.recv_into(buffer, nbytes or None)
            except SSL.WantReadError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("timed out waiting for the request body") from None
                select.select([self._conn], [], [], min(left, 1.0))
            except SSL.ZeroReturnError:
                return 0
            except SSL.SysCallError as exc:
                if exc.args and exc.args[0] in (-1, 0):
                    return 0  # the client closed the connection
                raise OSError(exc.args[0], str(exc)) from None

    def __getattr__(self, name):
        return getattr(self._conn, name)


class ClientCertificateAdapter(pyOpenSSLAdapter):
    """pyOpenSSL adapter verifying optional client certificates against ``ca_dir``."""

    def __init__(self, certificate: str, private_key: str, ca_dir: str):
        super().__init__(certificate, private_key)
        self.ca_dir = ca_dir

    def get_environ(self) -> dict[str, str]:
        # The base class reads the server certificate through deprecated pyOpenSSL calls to
        # fill SSL_SERVER_* variables that nothing here uses.
        return {"wsgi.url_scheme": "https", "HTTPS": "on"}

    def makefile(self, sock, mode="r", bufsize=-1):
        stream = super().makefile(sock, mode, bufsize)
        raw = getattr(stream, "raw", None)
        if "r" in mode and isinstance(sock, SSL.Connection) and raw is not None and hasattr(raw, "_sock"):
            raw._sock = _PatientConnection(sock, sock.gettimeout())
        return stream

    def get_context(self) -> SSL.Context:
        ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
        # The certificate file may carry intermediates after the host certificate.
        ctx.use_certificate_chain_file(self.certificate)
        ctx.use_privatekey_file(self.private_key)
        ctx.check_privatekey()
        ctx.load_verify_locations(None, self.ca_dir)
        ctx.get_cert_store().set_flags(crypto.X509StoreFlags.ALLOW_PROXY_CERTS)
        ctx.set_verify(SSL.VERIFY_PEER)
        ctx.set_verify_depth(VERIFY_DEPTH)
        # A resumed session carries no verified chain to read the user from: never resume.
        ctx.set_options(SSL.OP_NO_TICKET)
        ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        return ctx


def _pem(cert: crypto.X509) -> str:
    return cert.to_cryptography().public_bytes(serialization.Encoding.PEM).decode()


def client_environ(ssl_conn: SSL.Connection) -> dict[str, str]:
    """mod_ssl-style variables for the verified client chain of one connection."""
    chain = ssl_conn.get_verified_chain() if ssl_conn.get_peer_certificate() is not None else None
    if not chain:
        return {SSL_CLIENT_VERIFY: "NONE"}
    certs = [c.to_cryptography() for c in chain]
    # The verified chain ends with the trusted CA; like mod_ssl's chain, omit the root.
    if len(certs) > 1 and certs[-1].issuer == certs[-1].subject:
        chain, certs = chain[:-1], certs[:-1]
    env = {
        SSL_CLIENT_VERIFY: "SUCCESS",
        SSL_CLIENT_CERT: _pem(chain[0]),
        "SSL_CLIENT_S_DN": dn_slash(certs[0].subject),
        "SSL_CLIENT_I_DN": dn_slash(certs[0].issuer),
    }
    for i, cert in enumerate(chain[1:]):
        env[f"{SSL_CLIENT_CERT_CHAIN}{i}"] = _pem(cert)
    return env


class ClientCertificateGateway(wsgi.Gateway_10):
    """WSGI gateway adding the client's verified chain to every request's environ."""

    def get_environ(self) -> dict:
        env = super().get_environ()
        sock = self.req.conn.socket
        ssl_conn = getattr(sock, "_ssl_conn", sock)
        # Computed once per connection: a keep-alive connection keeps its peer.
        cached = getattr(self.req.conn, "_aso_client_env", None)
        if cached is None:
            cached = client_environ(ssl_conn) if isinstance(ssl_conn, SSL.Connection) else {SSL_CLIENT_VERIFY: "NONE"}
            self.req.conn._aso_client_env = cached
        env.update(cached)
        return env


#: "GET //jobs HTTP/1.1": the official client joins endpoint and path with an extra slash.
_LEADING_SLASHES = re.compile(rb"^([A-Za-z]+ )//+")


class _CollapseLeadingSlashes:
    """rfile stand-in for reading the request line only."""

    def __init__(self, rfile):
        self._rfile = rfile

    def readline(self, *args):
        return _LEADING_SLASHES.sub(rb"\1/", self._rfile.readline(*args), count=1)

    def __getattr__(self, name):
        return getattr(self._rfile, name)


class DoubleSlashRequest(cheroot_server.HTTPRequest):
    """cheroot parses a request target ``//whoami`` as an authority ("whoami") and answers
    400 before the application sees it; read ``//x`` as ``/x`` instead."""

    def read_request_line(self):
        rfile = self.rfile
        self.rfile = _CollapseLeadingSlashes(rfile)
        try:
            return super().read_request_line()
        finally:
            self.rfile = rfile


class DoubleSlashConnection(cheroot_server.HTTPConnection):
    RequestHandlerClass = DoubleSlashRequest


def accept_double_slashes(server: cheroot_server.HTTPServer) -> None:
    """Make a cheroot server (HTTP or HTTPS) serve ``//path`` as ``/path``."""
    server.ConnectionClass = DoubleSlashConnection


def make_https_server(
    app,
    host: str,
    port: int,
    *,
    cert: str | os.PathLike,
    key: str | os.PathLike,
    ca_dir: str | os.PathLike,
    threads: int = 10,
) -> wsgi.Server:
    """A cheroot WSGI server for ``app`` on host:port over HTTPS with client certificates
    verified against ``ca_dir`` (a grid CA folder of ``<hash>.0`` files). Call ``.start()``
    (blocking) or ``.prepare()`` + ``.serve()``; ``.stop()`` ends it."""
    for what, path in (("--cert", cert), ("--key", key)):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{what} {path}: no such file")
    if not Path(ca_dir).is_dir():
        raise FileNotFoundError(f"--ca-dir {ca_dir}: no such directory")
    server = wsgi.Server((host, port), app, numthreads=threads)
    server.gateway = ClientCertificateGateway
    accept_double_slashes(server)
    server.ssl_adapter = ClientCertificateAdapter(str(cert), str(key), str(ca_dir))
    # Build the context now so a bad certificate or key fails at startup, not at first client.
    server.ssl_adapter.context = server.ssl_adapter.get_context()
    return server
