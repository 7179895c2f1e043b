"""A real ``myproxy-server`` (Debian package) on a loopback port, for the credential tests.

The server trusts the test CA (a copy of its folder with the ``.signing_policy`` files Globus
insists on), runs with the test PKI's host certificate, and lets the service certificate
retrieve any stored credential without a passphrase (a *trusted retriever*), which is how
CRAB's services retrieve user proxies. ``store`` puts a user's credential in it as a user's
``myproxy-init`` would, under a given login name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from aso.x509.proxy import dn_slash
from tests.procs import free_port, wait_for_port


def _signing_policy(ca_cert: Path) -> str:
    subject = dn_slash(x509.load_pem_x509_certificate(ca_cert.read_bytes()).subject)
    return (f"access_id_CA X509 '{subject}'\n"
            "pos_rights globus CA:sign\n"
            "cond_subjects globus '\"*\"'\n")


def globus_ca_dir(ca_dir: Path, target: Path) -> Path:
    """A copy of a hashed CA folder with a ``<hash>.signing_policy`` beside every ``<hash>.0``."""
    target.mkdir(parents=True, exist_ok=True)
    for cert in ca_dir.glob("*.0"):
        shutil.copyfile(cert, target / cert.name)
        (target / f"{cert.stem}.signing_policy").write_text(_signing_policy(cert))
    return target


@dataclass
class MyProxyServer:
    host: str
    port: int
    ca_dir: Path
    root: Path
    pid: int
    #: the trusted retriever's certificate (set by the fixture that makes it)
    service_dn: str = ""
    service_cert: Path | None = None
    service_key: Path | None = None

    def client_env(self, cert: Path, key: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("X509_", "MYPROXY_"))}
        env.update(X509_CERT_DIR=str(self.ca_dir), X509_USER_CERT=str(cert), X509_USER_KEY=str(key),
                   MYPROXY_SERVER=self.host, MYPROXY_SERVER_PORT=str(self.port))
        return env

    def store(self, login: str, cert: Path, key: Path, retriever_dn: str, hours: int = 168) -> None:
        """Delegate a credential of ``cert`` to the server under ``login``, with no passphrase,
        retrievable by ``retriever_dn`` (myproxy-init -n -x -Z: the DN as a regular expression, not a CN)."""
        res = subprocess.run(
            ["myproxy-init", "-n", "-l", login, "-x", "-Z", retriever_dn, "-c", str(hours), "-t", str(hours)],
            env=self.client_env(cert, key), capture_output=True, text=True, timeout=60,
        )
        if res.returncode != 0:
            raise RuntimeError(f"myproxy-init failed ({res.returncode}): {res.stdout}{res.stderr}")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        for _ in range(50):
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


@contextlib.contextmanager
def myproxy_server(root: Path, ca_dir: Path, host_cert: Path, host_key: Path) -> Iterator[MyProxyServer]:
    root.mkdir(parents=True, exist_ok=True)
    trust = globus_ca_dir(ca_dir, root / "certificates")
    storage = root / "storage"
    storage.mkdir(mode=0o700, exist_ok=True)
    config = root / "myproxy-server.config"
    config.write_text(
        'accepted_credentials "*"\n'
        'authorized_retrievers "*"\n'
        'default_retrievers "*"\n'
        'trusted_retrievers "*"\n'
        'default_trusted_retrievers "none"\n'
        'authorized_renewers "*"\n'
        'default_renewers "none"\n'
        "max_proxy_lifetime 168\n"
    )
    key = root / "hostkey.pem"
    shutil.copyfile(host_key, key)
    key.chmod(0o600)
    port = free_port()
    pidfile = root / "myproxy-server.pid"
    env = {k: v for k, v in os.environ.items() if not k.startswith("X509_")}
    env.update(X509_CERT_DIR=str(trust), X509_USER_CERT=str(host_cert), X509_USER_KEY=str(key))
    with open(root / "myproxy-server.log", "w") as log:  # the daemon keeps its own copy of the descriptor
        res = subprocess.run(
            ["/usr/sbin/myproxy-server", "-c", str(config), "-s", str(storage), "-p", str(port), "-l", "127.0.0.1",
             "-P", str(pidfile), "-v"],
            env=env, stdout=log, stderr=subprocess.STDOUT, timeout=30,
        )
    if res.returncode != 0:
        raise RuntimeError(f"myproxy-server did not start: {(root / 'myproxy-server.log').read_text()}")
    for _ in range(100):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        time.sleep(0.05)
    server = MyProxyServer("localhost", port, trust, root, int(pidfile.read_text().strip()))
    try:
        wait_for_port(port)
        yield server
    finally:
        server.stop()
