from __future__ import annotations

import re

import pytest

from aso.state import open_backend
from aso.state.auth import BearerTokenAuthenticator
from aso.state.server import create_app
from aso.state.store import Store
from tests.state.servers import TOKENS
from tests.web.data import populate


@pytest.fixture
def store_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture
def filled(store_url):
    """A store with rows in every state (as tests/web/data.py plans); the ids per state."""
    backend = open_backend(store_url, worker="worker-a")
    ids = populate(backend)
    backend.close()
    return ids


@pytest.fixture
def app(store_url, filled):
    store = Store(store_url)
    yield create_app(store, BearerTokenAuthenticator(TOKENS), instance="test")
    store.close()


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF field in the form"
    return match.group(1)


def login(client, token: str, **kwargs):
    form = client.get("/login", **kwargs)
    return client.post("/login", data={"token": token, "csrf": csrf_of(form.text)}, **kwargs)
