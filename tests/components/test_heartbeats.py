"""A component instance's heartbeats (real SQLite store): written at the start of a pass,
refreshed during a long one, best effort when the backend is away (and then the instance
takes no new users' work), and the retry manager's share of the kills."""

from __future__ import annotations

import time

from aso.components.passes import Heartbeater
from aso.components.pipeline import PipelineSettings
from aso.components.retry_manager import RetryManagerPass
from aso.state import open_backend
from aso.state.shares import owner
from tests.procs import free_port
from tests.state.test_contract import request

USERS = [f"user{i}" for i in range(20)]


def test_a_long_pass_keeps_its_heartbeat_fresh(tmp_path):
    backend = open_backend(f"sqlite:///{tmp_path / 'state.db'}", worker="host-a")
    try:
        beats = Heartbeater(backend, "transfer", 1, host="a.example")
        first = beats.beat()
        assert first.live == ["host-a"] and backend.generation == 1
        start = backend.instances(1)[0].heartbeat
        with beats.during():
            time.sleep(1.6)  # longer than the timeout: only the refreshes keep it live
            (instance,) = backend.instances(1)
            assert instance.live and instance.heartbeat > start + 0.9
    finally:
        backend.close()


def test_an_instance_that_cannot_heartbeat_takes_no_new_users(tmp_path):
    backend = open_backend(f"http://127.0.0.1:{free_port()}", worker="host-a", retries=1, timeout=1)
    try:
        assert backend.share(USERS) == (USERS, [])  # never heartbeat: alone, as a single host
        assert Heartbeater(backend, "transfer", 600).beat() is None  # a warning, not an error
        assert backend.heartbeat_failed and backend.share(USERS) == ([], USERS)
    finally:
        backend.close()


def test_the_retry_manager_cancels_only_its_own_kills(tmp_path):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    a, b = open_backend(url, worker="host-a"), open_backend(url, worker="host-b")
    try:
        a.inject([request(i, user) for i, user in enumerate(USERS)])
        a.acquire_transfers(USERS[:5], 10)  # host-a's rows; the others nobody's
        ids = [r["tm_id"] for r in a.list_transfers(limit=100)]
        a.request_kill(ids=ids)
        for backend in (a, b, a):  # each sees the other live
            Heartbeater(backend, "retry-manager", 600).beat()
        settings = PipelineSettings(sandbox_root=tmp_path / "sandboxes")
        picked = {w: {r["tm_username"] for r in RetryManagerPass(be, None, None, settings)._mine_to_kill(
            a.transfers_to_kill())} for w, be in (("host-a", a), ("host-b", b))}
        assert picked["host-a"] & picked["host-b"] == set()
        assert picked["host-a"] | picked["host-b"] == set(USERS)
        assert set(USERS[:5]) <= picked["host-a"]
        assert all(owner(u, ["host-a", "host-b"]) == "host-b" for u in picked["host-b"])
    finally:
        a.close()
        b.close()
