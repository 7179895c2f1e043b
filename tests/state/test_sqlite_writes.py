"""How the local SQLite store writes: one writer connection per process, threads taking
turns on it, and rows of a batch stored grouped by user."""

from __future__ import annotations

import sqlite3
import threading

import pytest
from sqlalchemy import text

from aso.errors import BackendUnavailable
from aso.state import TransferUpdate, open_backend
from aso.state.states import TransferState
from aso.state.store import Store
from tests.state.test_contract import request
from tests.state.test_contract import request as request_row


def test_threads_of_one_process_write_in_turn_and_lose_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    backend = open_backend(url, worker="w1")
    users = [f"user{u}" for u in range(8)]
    errors: list[BaseException] = []

    def work(user: str) -> None:
        try:
            for batch in range(5):
                backend.inject([request(batch * 20 + i, user=user, task=f"t_{user}") for i in range(20)])
            backend.acquire_transfers([user], 1000)
            rows = backend.acquired_transfers(user, 1000)
            backend.set_submission_ids({r["tm_id"]: f"sid{user}" for r in rows})
            backend.update_transfers([TransferUpdate(id=r["tm_id"], state="SUBMITTED", fts_id=f"job-{user}",
                                                     fts_instance="https://fts:8446", expect_state="ACQUIRED")
                                      for r in rows])
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # read back through another connection, in another store: every row is there, SUBMITTED
    other = sqlite3.connect(tmp_path / "state.db")
    counts = dict(other.execute("SELECT tm_username, count(*) FROM filetransfersdb "
                                f"WHERE tm_transfer_state = {int(TransferState.SUBMITTED)} AND tm_sid = 'sid' || tm_username "
                                "AND tm_fts_id = 'job-' || tm_username GROUP BY tm_username"))
    other.close()
    assert counts == {u: 100 for u in users}
    backend.close()


def test_a_write_the_database_refuses_leaves_the_next_one_working(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    with pytest.raises(BackendUnavailable, match="no such table"):
        with store._write() as conn:
            conn.execute(text("INSERT INTO no_such_table VALUES (1)"))
    backend = open_backend(f"sqlite:///{tmp_path / 'state.db'}", worker="w1")
    store.close()
    assert len(backend.inject([request(1)]).inserted) == 1
    backend.close()


def test_a_write_that_fails_midway_is_rolled_back_on_the_shared_connection(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    with pytest.raises(RuntimeError):
        with store._write() as conn:
            conn.execute(text("CREATE TABLE scratch (x INTEGER)"))
            raise RuntimeError("a bug between two statements")
    with store._read() as conn:
        assert conn.execute(text("SELECT count(*) FROM sqlite_master WHERE name = 'scratch'")).scalar() == 0
    with store._write() as conn:  # the same connection, usable again
        conn.execute(text("CREATE TABLE scratch (x INTEGER)"))
    with store._read() as conn:
        assert conn.execute(text("SELECT count(*) FROM sqlite_master WHERE name = 'scratch'")).scalar() == 1
    store.close()


def test_a_batch_is_stored_grouped_by_user_and_answered_in_request_order(tmp_path):
    backend = open_backend(f"sqlite:///{tmp_path / 'state.db'}", worker="w1")
    # interleaved, as a batch gathered from many jobs arrives
    requests = [request(i, user=f"user{i % 4}", task=f"t_user{i % 4}") for i in range(40)]
    result = backend.inject(requests)
    rows = backend.get_transfers(result.inserted)
    assert [r["tm_source_lfn"] for r in sorted(rows, key=lambda r: result.inserted.index(r["tm_id"]))] == \
        [r["source_lfn"] for r in requests]
    db = sqlite3.connect(tmp_path / "state.db")
    order = [u for (u,) in db.execute("SELECT tm_username FROM filetransfersdb ORDER BY rowid")]
    db.close()
    # each user's rows side by side in the table
    assert order == sorted(order)
    backend.close()


def test_only_the_writer_keeps_its_temporary_storage_in_memory(tmp_path):
    # statement journals of big UPDATEs stay off the disk; readers' big sorts stay off the heap
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    memory = 2  # PRAGMA temp_store: 0 default (files here), 2 memory

    def writer_setting() -> int:
        with store._write() as conn:
            return conn.execute(text("PRAGMA temp_store")).scalar()

    assert writer_setting() == memory
    with store._read() as conn:
        assert conn.execute(text("PRAGMA temp_store")).scalar() != memory
    # a writer dropped after an error is replaced by one set the same way, and is not
    # handed to a reader
    with pytest.raises(BackendUnavailable):
        with store._write() as conn:
            conn.execute(text("INSERT INTO no_such_table VALUES (1)"))
    assert writer_setting() == memory
    for _ in range(3):
        with store._read() as conn:
            assert conn.execute(text("PRAGMA temp_store")).scalar() != memory
    store.close()


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_a_bounded_update_changes_every_row_a_few_statement_at_a_time(tmp_path, request, engine):
    from aso.state.store.engine import _c, update_bounded
    from tests.state.conftest import fresh_postgres

    if engine == "postgres":
        url = request.getfixturevalue("postgres_url")
        fresh_postgres(url)
    else:
        url = f"sqlite:///{tmp_path / 'state.db'}"
    backend = open_backend(url, worker="w1")
    try:
        backend.inject([request_row(i, user=f"user{i % 3}") for i in range(11)])
        store = backend.store
        statements = []
        with store._write() as conn:
            from sqlalchemy import event

            def seen(*args):
                statements.append(args[2])

            event.listen(conn, "before_cursor_execute", seen)
            changed = update_bounded(conn, [_c.tm_transfer_state == int(TransferState.NEW), _c.tm_username != "user2"],
                                     {"tm_transfer_state": int(TransferState.KILLED)}, rows=3)
            event.remove(conn, "before_cursor_execute", seen)
        states = {r["tm_username"]: set() for r in backend.list_transfers()}
        for r in backend.list_transfers():
            states[r["tm_username"]].add(r["tm_transfer_state"])
    finally:
        backend.close()
    assert changed == 8  # of the 11 rows, those not user2's: 4 of user0, 4 of user1
    assert states == {"user0": {"KILLED"}, "user1": {"KILLED"}, "user2": {"NEW"}}
    # SQLite: 3 + 3 + 2 rows, the last statement short, which ends it; PostgreSQL: one
    assert len(statements) == (3 if engine == "sqlite" else 1)


def test_whole_state_updates_go_on_where_the_last_statement_stopped(tmp_path):
    # Each bounded statement must seek the index on (worker, state) past the last rowid it
    # changed: through (worker, publication state, user) the publisher's acquisition took
    # 7 s instead of 5 at 300,000 rows, and a walk from the start each time is quadratic.
    from sqlalchemy import event

    backend = open_backend(f"sqlite:///{tmp_path / 'state.db'}", worker="w1")
    plans: dict[str, str] = {}
    try:
        store = backend.store

        def explain(conn, cursor, statement, parameters, context, executemany):
            if statement.lstrip().upper().startswith("UPDATE"):
                plan = " ".join(r[-1] for r in cursor.connection.execute("EXPLAIN QUERY PLAN " + statement, parameters))
                plans["publication" if "tm_publication_state=" in statement.replace(" ", "") else "retry"] = plan

        event.listen(store.engine, "before_cursor_execute", explain)
        backend.acquire_publication()
        backend.retry_transfers(0)
        event.remove(store.engine, "before_cursor_execute", explain)
    finally:
        backend.close()
    assert set(plans) == {"publication", "retry"}
    for plan in plans.values():
        assert "ix_ftdb_worker_tstate (tm_aso_worker=? AND tm_transfer_state=? AND rowid>?)" in plan, plans
