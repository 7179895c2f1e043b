"""Fixtures of the pipeline tests: an HTTPS aso fts-server, the two state backends, users."""

from __future__ import annotations

import itertools

import pytest

from tests.pipeline.harness import Installation
from tests.pki import fts_server_https
from tests.state.servers import start_state_server

_names = itertools.count()


@pytest.fixture(scope="module")
def fts(pki, tmp_path_factory):
    # one service for the module's tests: each test's installation lies under the base temp folder
    with fts_server_https(pki, tmp_path_factory.mktemp("pipeline-fts"), "--workers", "8", "--per-link", "4",
                          roots=[tmp_path_factory.getbasetemp()]) as srv:
        yield srv


@pytest.fixture(params=["local", "rest"])
def backend_settings(request, tmp_path):
    if request.param == "local":
        yield ()
        return
    folder = tmp_path / "state-server"
    folder.mkdir()
    service, url = start_state_server(folder)
    try:
        yield (f"state.url={url}", 'state.token="service-token"', 'aso.instance="test"')
    finally:
        service.stop()


def users_for(pki, inst: Installation, n: int) -> list[str]:
    """Fresh users (each test its own VO on the FTS side), with proxies in the directory source."""
    users = []
    for _ in range(n):
        name = f"user{next(_names)}"
        user = pki.add_user(name)
        inst.add_proxy(name, user.proxy_path)
        users.append(name)
    return users


def installation(tmp_path, fts, *settings) -> Installation:
    return Installation(tmp_path / "aso", fts.url, f'fts.ca_dir="{fts.ca_dir}"', "transfer.max_files_per_job=50", *settings)


