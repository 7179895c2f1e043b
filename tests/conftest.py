"""Fixtures shared by every test folder. Part-specific fixtures live in tests/<part>/conftest.py."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def postgres_url() -> str:
    """A PostgreSQL URL for tests, from ASO_TEST_POSTGRES_URL; .ci/run always sets it."""
    url = os.environ.get("ASO_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("ASO_TEST_POSTGRES_URL is not set (.ci/run sets it; see README)")
    return url


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """A throwaway CA folder, a localhost host certificate and users alice and bob with 12 h
    RFC 3820 proxies (see tests/pki.py); shared by the whole run, so never modify its files."""
    from tests.pki import build_pki

    return build_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def myproxy(pki, tmp_path_factory):
    """A real myproxy-server on loopback trusting the test CA, and a service certificate it
    treats as a trusted retriever (see tests/myproxy_server.py)."""
    from aso.x509.pki import make_user_cert
    from tests.myproxy_server import myproxy_server

    root = tmp_path_factory.mktemp("myproxy")
    service = make_user_cert(pki.ca, "aso-service")
    cert, key = service.write_cert_and_key(root / "service" / "cert.pem", root / "service" / "key.pem")
    with myproxy_server(root / "server", pki.ca_dir, pki.host_cert_path, pki.host_key_path) as server:
        server.service_dn, server.service_cert, server.service_key = service.dn, cert, key
        yield server
