"""Acquisition takes a bounded number of rows per statement, on SQLite and PostgreSQL: on
SQLite a statement journals every page it changes, in memory on the writer, so one
statement over 100 users with 3,000 files each took a process from 104 to 251 MB."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event

from aso.state.store import Store
from aso.state.store.transfers import statement_batches
from aso.topology.throttle import ThrottleLimits
from tests.state.conftest import fresh_postgres
from tests.state.test_contract import request

WORKER = "worker-a"


def test_statement_batches_pack_whole_wishes_and_split_big_ones_into_pieces_alone():
    wanted = [("alice", 2), ("bob", 0), ("carol", 3), ("dave", 7), ("erin", 1)]
    assert statement_batches(wanted, rows=5, per_statement=10) == [
        [("alice", 2), ("carol", 3)],  # bob wants nothing: left out
        [("dave", 5)], [("dave", 2)],  # more than a statement's rows: pieces, each alone
        [("erin", 1)],
    ]
    assert statement_batches([("a", 1), ("b", 1), ("c", 1)], rows=10, per_statement=2) == [
        [("a", 1), ("b", 1)], [("c", 1)]]
    assert statement_batches([("a", 10)], rows=5, per_statement=3) == [[("a", 5)], [("a", 5)]]
    assert statement_batches([], rows=5, per_statement=3) == []
    with pytest.raises(ValueError):
        statement_batches([("a", 1)], rows=0, per_statement=3)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(wishes=st.lists(st.integers(min_value=0, max_value=40), max_size=30),
       rows=st.integers(min_value=1, max_value=12), per_statement=st.integers(min_value=1, max_value=5))
def test_statement_batches_bound_every_statement_and_take_every_wish(wishes, rows, per_statement):
    wanted = [(f"u{i}", n) for i, n in enumerate(wishes)]
    batches = statement_batches(wanted, rows, per_statement)
    taken: Counter = Counter()
    order = []
    for batch in batches:
        assert batch
        assert sum(n for _, n in batch) <= rows
        assert len(batch) <= per_statement
        keys = [k for k, _ in batch]
        assert len(set(keys)) == len(keys)  # one ranking per key and statement
        for key, n in batch:
            assert n > 0
            if n < dict(wanted)[key] and len(batch) > 1:
                pytest.fail(f"a piece of {key} shares a statement: {batch}")
            taken[key] += n
            if not order or order[-1] != key:
                order.append(key)
    assert taken == {k: n for k, n in wanted if n > 0}
    assert order == [k for k, n in wanted if n > 0]  # users in the order given, oldest pieces first


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        fresh_postgres(url)
    else:
        url = f"sqlite:///{tmp_path / 'state.db'}"
    s = Store(url)
    yield s
    s.close()


def acquiring_statements(store: Store, call) -> int:
    """How many acquiring UPDATEs ``call`` runs."""
    seen = []

    def record(conn, cursor, statement, params, context, executemany):
        if "UPDATE filetransfersdb" in statement and "tm_aso_worker" in statement:
            seen.append(statement)

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        call()
    finally:
        event.remove(store.engine, "before_cursor_execute", record)
    return len(seen)


def acquired(store: Store) -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for r in store.acquired_transfers(None, 1000, worker=WORKER):
        rows.setdefault(r["tm_username"], []).append(r["tm_id"])
    return {user: sorted(ids) for user, ids in rows.items()}


def oldest(store: Store, user: str, n: int) -> list[str]:
    mine = [r for r in store.list_transfers(user=user) if r["tm_username"] == user]
    return sorted(r["tm_id"] for r in sorted(mine, key=lambda r: (r["tm_creation_time"], r["tm_id"]))[:n])


def test_acquisition_takes_each_users_oldest_rows_a_bounded_statement_at_a_time(store):
    store.inject([request(i, "alice") for i in range(7)] + [request(i, "bob") for i in range(2)]
                 + [request(i, "carol") for i in range(4)])
    statements = acquiring_statements(store, lambda: store.acquire_transfers(
        ["alice", "bob", "carol", "dave"], 5, worker=WORKER, rows_per_statement=3))
    # alice 5 of 7 (3 + 2), bob 2, carol 4 (3 + 1); dave has nothing and costs no statement
    assert statements == 5
    got = acquired(store)
    assert {u: len(ids) for u, ids in got.items()} == {"alice": 5, "bob": 2, "carol": 4}
    assert got["alice"] == oldest(store, "alice", 5)
    # the per-user limit holds over the pieces: the next pass takes alice's last two only
    assert int(store.acquire_transfers(["alice", "bob", "carol"], 5, worker=WORKER, rows_per_statement=3)) == 2


def test_throttled_acquisition_bounds_its_statements_too(store):
    store.inject([request(i, "alice", destination="T2_B") for i in range(8)]
                 + [request(i, "bob", destination="T2_B") for i in range(2)])
    limits = ThrottleLimits(incoming={"T2_B": 9})
    taken = []
    statements = acquiring_statements(store, lambda: taken.append(store.acquire_transfers(
        ["alice", "bob"], 100, worker=WORKER, limits=limits, rows_per_statement=3)))
    assert int(taken[0]) == 9 and taken[0].held == 1
    got = acquired(store)
    assert sum(len(ids) for ids in got.values()) == 9
    for user, ids in got.items():
        assert ids == oldest(store, user, len(ids))
    # whatever the limits' split, 9 rows in statements of at most 3
    assert statements >= 3
