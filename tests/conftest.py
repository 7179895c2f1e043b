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
