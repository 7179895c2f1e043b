"""aso archive: finished rows move to filetransfersdb_history (or go), live rows never do."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, text, update

from aso.cli import cli
from aso.errors import ValidationError
from aso.installation import init_installation
from aso.state import PublicationUpdate, TransferUpdate
from aso.state.local import LocalBackend
from aso.state.schema import transfers, transfers_history
from aso.state.store import Store
from tests.state.conftest import fresh_postgres
from tests.state.test_contract import request

WORKER = "worker-a"
#: the rows that may go, by the task that holds them
FINISHED = {"done_unpublished", "done_published", "done_publication_failed", "failed", "killed"}
LIVE = {"new", "submitted", "done_to_publish", "retry", "kill"}


def _ids(backend, task: str) -> list[str]:
    return [r["tm_id"] for r in backend.store.list_transfers(task=task)]


def _submitted(backend, task: str, n: int = 2, publish: int = 0) -> list[str]:
    backend.inject([request(i, task=task, publish=publish) for i in range(n)])
    backend.acquire_transfers(["alice"], 1000)
    ids = [r["tm_id"] for r in backend.acquired_transfers(user="alice")]
    backend.update_transfers([TransferUpdate(i, "SUBMITTED", fts_id="job-1", fts_instance="https://fts:8446") for i in ids])
    return ids


def populate(url: str) -> LocalBackend:
    """Two rows of every finished and every live kind, each kind its own task."""
    b = LocalBackend(url, worker=WORKER)
    b.update_transfers([TransferUpdate(i, "DONE") for i in _submitted(b, "done_unpublished")])
    b.update_transfers([TransferUpdate(i, "DONE") for i in _submitted(b, "done_to_publish", publish=1)])
    b.update_transfers([TransferUpdate(i, "DONE") for i in _submitted(b, "done_published", publish=1)])
    b.update_transfers([TransferUpdate(i, "DONE") for i in _submitted(b, "done_publication_failed", publish=1)])
    b.acquire_publication()
    b.update_publication([PublicationUpdate(i, "DONE") for i in _ids(b, "done_published")]
                         + [PublicationUpdate(i, "FAILED", reason="no block") for i in _ids(b, "done_publication_failed")]
                         + [PublicationUpdate(i, "NEW") for i in _ids(b, "done_to_publish")])
    b.update_transfers([TransferUpdate(i, "FAILED", reason="gone") for i in _submitted(b, "failed")])
    b.update_transfers([TransferUpdate(i, "RETRY", reason="again") for i in _submitted(b, "retry")])
    _submitted(b, "submitted")
    for task in ("killed", "kill"):
        _submitted(b, task)
        b.request_kill(task=task)
    b.mark_killed(_ids(b, "killed"))
    b.inject([request(i, task="new") for i in range(2)])
    return b


def _age(store: Store, seconds: int) -> None:
    """Every row as if it had ended and last changed ``seconds`` ago."""
    past = int(time.time()) - seconds
    with store._write() as conn:
        conn.execute(update(transfers).values(tm_last_update=past,
                                              tm_end_time=transfers.c.tm_end_time - seconds))


def _tasks(store: Store, table) -> dict[str, int]:
    with store._read() as conn:
        return dict(conn.execute(select(table.c.tm_taskname, func.count()).group_by(table.c.tm_taskname)).all())


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path) -> str:
    if request.param == "postgres":
        pg = request.getfixturevalue("postgres_url")
        fresh_postgres(pg)
        return pg
    return f"sqlite:///{tmp_path / 'state.db'}"


def test_moves_finished_rows_only_in_batches_and_again_nothing(url):
    backend = populate(url)
    store = backend.store
    before = {r["tm_id"]: r for r in store.list_transfers()}
    now = int(time.time())
    assert store.archive(now + 10, dry_run=True).rows == 10
    assert len(store.list_transfers()) == 20  # a dry run changes nothing

    result = store.archive(now + 10, batch=3)
    assert (result.rows, result.batches, result.mode) == (10, 4, "archive")
    assert set(_tasks(store, transfers)) == LIVE
    assert _tasks(store, transfers_history) == dict.fromkeys(FINISHED, 2)
    with store._read() as conn:
        moved = {r["tm_id"]: r for r in conn.execute(select(transfers_history)).mappings()}
    for row_id, row in moved.items():
        # every column as it was, and when it moved
        assert row["tm_archived_time"] >= now
        assert row["tm_source_lfn"] == before[row_id]["tm_source_lfn"]
        assert row["tm_transfer_failure_reason"] == before[row_id]["tm_transfer_failure_reason"]

    again = store.archive(now + 10, batch=3)
    assert (again.rows, again.batches) == (0, 0)
    assert len(moved) == 10 and len(_tasks(store, transfers_history)) == 5
    backend.close()


def test_cutoff_purge_and_bad_batch(url):
    backend = populate(url)
    store = backend.store
    now = int(time.time())
    assert store.archive(now - 3600).rows == 0  # nothing ended an hour ago
    result = store.archive(now + 10, purge=True, batch=100)
    assert (result.rows, result.batches, result.mode) == (10, 1, "purge")
    assert set(_tasks(store, transfers)) == LIVE
    assert _tasks(store, transfers_history) == {}
    with pytest.raises(ValidationError, match="batch_size"):
        store.archive(now, batch=0)
    backend.close()


def test_rows_locked_by_a_writer_wait_for_the_next_run(postgres_url):
    """PostgreSQL: a finished row another transaction is changing is skipped, not waited on."""
    fresh_postgres(postgres_url)
    backend = populate(postgres_url)
    store = backend.store
    locked = _ids(backend, "failed")[0]
    with store.engine.connect() as other, other.begin():
        other.execute(text("SELECT tm_id FROM filetransfersdb WHERE tm_id = :i FOR UPDATE"), {"i": locked})
        assert store.archive(int(time.time()) + 10).rows == 9
    assert store.archive(int(time.time()) + 10).rows == 1
    backend.close()


@pytest.fixture
def installation(tmp_path):
    return init_installation(tmp_path / "inst")


def run(config, *args):
    return CliRunner().invoke(cli, ["--config", str(config), *args])


def test_cli_archive_and_purge(installation):
    backend = populate(f"sqlite:///{installation.parent / 'state.db'}")
    _age(backend.store, 40 * 86400)
    dry = run(installation, "archive", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output) | {"cutoff": 0} == {"mode": "archive", "dry_run": True, "rows": 10, "batches": 0,
                                                       "older_than_days": 30, "cutoff": 0}
    assert run(installation, "archive", "--older-than", "41").output.startswith("0 finished row(s) older than 41")
    # more days than the epoch holds: nothing is that old (not an error about a negative cut-off)
    huge = run(installation, "archive", "--older-than", "100000000")
    assert huge.exit_code == 0 and huge.output.startswith("0 finished row(s) older than 100000000"), huge.output
    done = run(installation, "archive", "--batch-size", "4")
    assert done.exit_code == 0, done.output
    assert done.output.strip() == "10 finished row(s) older than 30 day(s) moved to filetransfersdb_history in 3 batch(es)"
    assert set(_tasks(backend.store, transfers)) == LIVE
    backend.close()


@pytest.mark.parametrize("args, code, message", [
    (["--older-than", "-1"], 2, "--older-than: expected a number of days >= 0"),
    (["--batch-size", "0"], 2, "--batch-size: expected 1 to 1000000 rows"),
    (["--db-url", "ftp://x/y"], 2, "--db-url:"),
    (["--db-url", "http://127.0.0.1:8080"], 2, "not through a REST server"),
    (["--db-url", "postgresql+psycopg://nobody@127.0.0.1:1/none"], 3, "state database"),
])
def test_cli_errors_one_line_and_exit_code(installation, args, code, message):
    result = CliRunner().invoke(cli, ["--config", str(installation), "archive", *args])
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_a_database_made_before_v6_gets_the_history_table_and_the_kill_index(tmp_path):
    import sqlite3

    from tests.state.migrations import rewound_database

    url = rewound_database(tmp_path / "old.db", 4, "DROP TABLE filetransfersdb_history", "DROP INDEX ix_ftdb_kill")
    Store(url).close()
    with sqlite3.connect(tmp_path / "old.db") as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        plan = " ".join(r[-1] for r in db.execute(
            "EXPLAIN QUERY PLAN SELECT tm_id FROM filetransfersdb WHERE tm_transfer_state = 6 ORDER BY tm_last_update"))
    assert "filetransfersdb_history" in tables
    assert "ix_ftdb_kill" in plan  # the retry manager's kill scan reads KILL rows only
