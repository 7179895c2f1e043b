from __future__ import annotations

import pytest

from aso.state import open_backend
from aso.state.store import Store
from tests.state.servers import start_state_server

WORKER = "worker-a"


def fresh_postgres(url: str) -> None:
    store = Store(url)
    store.drop_all()
    store.close()


@pytest.fixture(params=["sqlite", "postgres", "rest"])
def backend_kind(request) -> str:
    return request.param


@pytest.fixture
def db_url(backend_kind, tmp_path, request) -> str:
    if backend_kind == "postgres":
        url = request.getfixturevalue("postgres_url")
        fresh_postgres(url)
        return url
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture
def make_backend(backend_kind, db_url, tmp_path):
    """Backends bound to a worker name, all on the same database (one server for REST)."""
    made = []
    server = None

    def make(worker: str = WORKER):
        nonlocal server
        if backend_kind == "rest":
            if server is None:
                server = start_state_server(tmp_path, db_url)
            backend = open_backend(server[1], worker=worker, token="service-token", instance="test", retries=2, backoff=0.1)
        else:
            backend = open_backend(db_url, worker=worker)
        made.append(backend)
        return backend

    yield make
    for b in made:
        b.close()
    if server is not None:
        server[0].stop()


@pytest.fixture
def backend(make_backend):
    return make_backend()
