"""Two acquirers in two processes never acquire the same row."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from aso.state import open_backend
from tests.state.conftest import fresh_postgres
from tests.state.test_contract import request

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from aso.state import open_backend
    url, worker = sys.argv[1], sys.argv[2]
    backend = open_backend(url, worker=worker)
    print("ready", flush=True)
    sys.stdin.readline()  # start together
    got = 0
    while True:
        users = backend.active_users()
        n = backend.acquire_transfers([u for u in users], 25)
        if n == 0:
            break
        got += n
    print(json.dumps(sorted(r["tm_id"] for r in backend.acquired_transfers(limit=100000))), flush=True)
    """
)


@pytest.fixture(params=["sqlite", "postgres"])
def shared_url(request, tmp_path):
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        fresh_postgres(url)
        return url
    return f"sqlite:///{tmp_path / 'state.db'}"


def test_two_processes_acquire_disjoint_rows(shared_url):
    backend = open_backend(shared_url, worker="setup")
    total = 1500
    backend.inject([request(i, user=f"user{i % 5}") for i in range(total)])
    backend.close()
    procs = [
        subprocess.Popen([sys.executable, "-c", SCRIPT, shared_url, f"worker-{k}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for k in range(2)
    ]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        results.append(set(json.loads(out.strip().splitlines()[-1])))
    first, second = results
    assert not first & second, "a row was acquired by both workers"
    assert len(first) + len(second) == total
