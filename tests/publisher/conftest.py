from __future__ import annotations

import pytest

from aso.catalogs.local import LocalCatalog
from aso.components.publisher import PublisherSettings
from aso.components.retry_policy import RetryPolicy
from aso.state import open_backend
from tests.state.servers import start_state_server

WORKER = "pub-worker"


@pytest.fixture(params=["sqlite", "rest"])
def backend(request, tmp_path):
    db_url = f"sqlite:///{tmp_path / 'state.db'}"
    server = None
    if request.param == "rest":
        server = start_state_server(tmp_path, db_url)
        b = open_backend(server[1], worker=WORKER, token="service-token", instance="test", retries=2, backoff=0.1)
    else:
        b = open_backend(db_url, worker=WORKER)
    yield b
    b.close()
    if server is not None:
        server[0].stop()


@pytest.fixture
def local_backend(tmp_path):
    b = open_backend(f"sqlite:///{tmp_path / 'state.db'}", worker=WORKER)
    yield b
    b.close()


@pytest.fixture
def catalog(tmp_path):
    c = LocalCatalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    yield c
    c.close()


@pytest.fixture
def settings():
    return PublisherSettings(max_files_per_block=10, block_closure_timeout=9400, expiration=3 * 86400, threads=2,
                             retry=RetryPolicy(max_retry=3))
