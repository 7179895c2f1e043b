"""The share rule: rendezvous hashing of users over the live workers of a component."""

from __future__ import annotations

from collections import Counter

from aso.state.shares import mine, owner, shares

USERS = [f"user{i:04d}" for i in range(3000)]


def test_the_owner_is_stable_and_one_of_the_workers():
    workers = ["host-a", "host-b", "host-c"]
    first = {u: owner(u, workers) for u in USERS}
    assert set(first.values()) == set(workers)
    # order of the workers and repeated asks do not matter (no process-dependent hash)
    assert {u: owner(u, list(reversed(workers))) for u in USERS} == first
    assert owner("alice", []) is None


def test_users_spread_evenly():
    counts = Counter(owner(u, ["host-a", "host-b", "host-c", "host-d"]) for u in USERS)
    assert all(abs(n - len(USERS) / 4) < len(USERS) * 0.05 for n in counts.values()), counts


def test_a_worker_leaving_moves_only_its_own_users():
    before = {u: owner(u, ["host-a", "host-b", "host-c"]) for u in USERS}
    after = {u: owner(u, ["host-a", "host-c"]) for u in USERS}
    moved = {u for u in USERS if before[u] != after[u]}
    assert moved == {u for u in USERS if before[u] == "host-b"}
    # and one joining takes only users that become its own
    joined = {u: owner(u, ["host-a", "host-b", "host-c", "host-d"]) for u in USERS}
    assert {u for u in USERS if joined[u] != before[u]} == {u for u in USERS if joined[u] == "host-d"}


def test_shares_and_mine():
    split = shares(USERS[:100], ["host-b", "host-a"])
    assert sorted(split) == ["host-a", "host-b"] and sorted(split["host-a"] + split["host-b"]) == USERS[:100]
    own, others = mine(USERS[:100], "host-a", ["host-b"])  # the asker always counts as live
    assert own == split["host-a"] and others == split["host-b"]
    assert mine(USERS[:5], "host-a", None) == (USERS[:5], [])  # no heartbeat data: alone, everyone
    assert mine(USERS[:5], "host-a", ["host-a"]) == (USERS[:5], [])
