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
