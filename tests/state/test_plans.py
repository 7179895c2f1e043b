"""SQLite's plans for the pass's per-user and per-chunk statements: each a seek, never a walk
through every live row (which made a pass over 10,000 users quadratic) nor a table scan."""

from __future__ import annotations

import pytest
from sqlalchemy import event

from aso.state.store import Store
from tests.state.test_contract import request

WORKER = "worker-a"


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'state.db'}")
    s.inject([request(i) for i in range(3)])
    yield s
    s.close()


def plans(store: Store, call) -> list[str]:
    """The query plan of every statement ``call`` runs against the transfers table."""
    seen = []

    def record(conn, cursor, statement, params, context, executemany):
        if "filetransfersdb" in statement and not statement.startswith(("EXPLAIN", "SELECT changes")):
            seen.append((statement, params))

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        call()
    finally:
        event.remove(store.engine, "before_cursor_execute", record)
    out = []
    with store.engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()
        for statement, params in seen:
            out.append(" | ".join(r[-1] for r in cursor.execute("EXPLAIN QUERY PLAN " + statement, params)))
    return out


def test_a_users_acquired_rows_are_one_seek(store):
    [plan] = plans(store, lambda: store.acquired_transfers("alice", 1000, worker=WORKER))
    assert "ix_ftdb_user_tstate_worker (tm_username=? AND tm_transfer_state=? AND tm_aso_worker=?)" in plan


def test_acquisition_looks_the_picked_rows_up_by_key(store):
    count, plan = plans(store, lambda: store.acquire_transfers(["alice", "bob"], 10, worker=WORKER))
    # what each user has to take, counted on the index alone
    assert count == ("SEARCH filetransfersdb USING COVERING INDEX ix_ftdb_user_tstate_worker "
                     "(tm_username=? AND tm_transfer_state=?)"), count
    first = plan.split(" | ")[0]
    assert first.startswith("SEARCH filetransfersdb USING INDEX sqlite_autoindex_filetransfersdb_1 (tm_id=?)"), plan
    assert "ix_ftdb_user_tstate_worker (tm_username=? AND tm_transfer_state=?)" in plan


def test_kills_read_the_kill_rows_only(store):
    [plan] = plans(store, lambda: store.transfers_to_kill())
    assert plan == "SCAN filetransfersdb USING INDEX ix_ftdb_kill"
