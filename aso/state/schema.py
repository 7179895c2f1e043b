"""Tables of the state store and their migrations.

Column names are CRAB's (``filetransfersdb``), so CRAB's tools and habits carry over.
The ``schema_version`` table records which migrations ran; opening a database applies the
missing ones, so a newer aso upgrades an older database instead of breaking on it.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    inspect,
    text,
)
from sqlalchemy.engine import Connection

metadata = MetaData()

#: the literal predicates of the status page's partial indexes; queries repeat them word for
#: word, because SQLite uses a partial index only when the query's WHERE contains its terms
LIVE_STATES = "tm_transfer_state IN (0, 1, 5)"
FAILING_STATES = "tm_transfer_state IN (2, 4)"
#: rows a kill asked for, until the retry manager cancels them (v6)
KILL_STATE = "tm_transfer_state = 6"
#: rows the pipeline will never touch again unless an operator retries them: transfer
#: FAILED or KILLED, or DONE with publication over (DONE, FAILED, NOT_REQUIRED). The one
#: definition of what ``aso archive`` may move (aso.state.store.archive).
FINISHED_ROWS = "(tm_transfer_state IN (2, 7) OR (tm_transfer_state = 3 AND tm_publication_state IN (2, 3, 5)))"
#: the partial index ix_ftdb_end's predicate (finished rows, oldest first, for the archive)
ENDED = "tm_end_time IS NOT NULL"

transfers = Table(
    "filetransfersdb",
    metadata,
    Column("tm_id", String(60), primary_key=True),
    Column("tm_username", String(64), nullable=False),
    Column("tm_taskname", String(255), nullable=False),
    Column("tm_source", String(100), nullable=False),
    Column("tm_destination", String(100), nullable=False),
    Column("tm_source_lfn", String(1000), nullable=False),
    Column("tm_destination_lfn", String(1000), nullable=False),
    Column("tm_filesize", BigInteger, nullable=False),
    Column("tm_checksum", String(16)),
    Column("tm_publish", SmallInteger, nullable=False, default=0),
    Column("tm_jobid", String(64)),
    Column("tm_job_retry_count", Integer, nullable=False, default=0),
    Column("tm_type", String(20), nullable=False, default="output"),
    Column("tm_aso_worker", String(100)),
    Column("tm_transfer_state", SmallInteger, nullable=False),
    Column("tm_publication_state", SmallInteger, nullable=False),
    Column("tm_transfer_retry_count", Integer, nullable=False, default=0),
    Column("tm_publication_retry_count", Integer, nullable=False, default=0),
    Column("tm_transfer_max_retry_count", Integer, nullable=False, default=2),
    Column("tm_publication_max_retry_count", Integer, nullable=False, default=2),
    Column("tm_transfer_failure_reason", String(1000)),
    Column("tm_publication_failure_reason", String(1000)),
    Column("tm_fts_id", String(255)),
    Column("tm_fts_instance", String(255)),
    Column("tm_dbs_blockname", String(1000)),
    Column("tm_block_complete", String(20)),
    Column("tm_start_time", BigInteger),
    Column("tm_last_update", BigInteger, nullable=False),
    Column("tm_end_time", BigInteger),
    Column("tm_creation_time", BigInteger, nullable=False),
    # ours: the sites a multi-hop path passes ("A>B>C"); NULL for a direct link
    Column("tm_path", String(400)),
    # ours (v5): the submission id (FTS sid) of the chunk the row was planned into, written
    # before the chunk is submitted, so whoever holds the row later resubmits the same sid
    # and FTS answers with the job already made instead of making a second one
    Column("tm_sid", String(64)),
    # CRAB's indexes, plus per-user state for acquisition. Every index costs each bulk
    # update a B-tree write per row, so stuck-row scans reuse (worker, state).
    Index("ix_ftdb_taskname", "tm_taskname"),
    Index("ix_ftdb_worker_tstate", "tm_aso_worker", "tm_transfer_state"),
    # (v7: the user too) The publisher reads its ACQUIRED rows a page of users at a time:
    # each page is a seek to the user it stopped at, in user order, whatever came before.
    Index("ix_ftdb_worker_pstate_user", "tm_aso_worker", "tm_publication_state", "tm_username"),
    Index("ix_ftdb_publish", "tm_publish", "tm_publication_state", "tm_transfer_state"),
    # (v6: the worker too) A user's ACQUIRED rows of this worker, the transfer pass's read
    # per user, are one seek; by (worker, state) they were a walk through every ACQUIRED
    # row of the worker for each user, quadratic in a pass over 10,000 users.
    Index("ix_ftdb_user_tstate_worker", "tm_username", "tm_transfer_state", "tm_aso_worker"),
    # Throttling counts the files in flight per link and user; partial, so it holds only
    # live rows and a table of millions of finished rows does not make it grow.
    Index("ix_ftdb_inflight", "tm_source", "tm_destination", "tm_username",
          sqlite_where=text("tm_transfer_state IN (1, 5)"), postgresql_where=text("tm_transfer_state IN (1, 5)")),
    # The status page (v4). Partial or on a column set once, so the millions of finished
    # rows neither grow them nor cost a write per bulk update:
    # - the queue (NEW, ACQUIRED, SUBMITTED), covering per task, per link and oldest-first;
    Index("ix_ftdb_live", "tm_transfer_state", "tm_last_update", "tm_username", "tm_taskname", "tm_source",
          "tm_destination", sqlite_where=text(LIVE_STATES), postgresql_where=text(LIVE_STATES)),
    # - throughput: files finished per time bucket (tm_end_time is set when a row finishes
    #   and kept after, so an entry is written about once per row);
    Index("ix_ftdb_end", "tm_end_time", "tm_transfer_state", "tm_filesize",
          sqlite_where=text("tm_end_time IS NOT NULL"), postgresql_where=text("tm_end_time IS NOT NULL")),
    # - recent failures: FAILED and RETRY rows by when they got there.
    Index("ix_ftdb_failing", "tm_last_update",
          sqlite_where=text(FAILING_STATES), postgresql_where=text(FAILING_STATES)),
    # The retry manager's kills (v6): no other index leads with the state, so without it
    # each pass read every row of the table to find the few in KILL.
    Index("ix_ftdb_kill", "tm_last_update", "tm_id",
          sqlite_where=text(KILL_STATE), postgresql_where=text(KILL_STATE)),
)

tasks = Table(
    "tasks",
    metadata,
    Column("tm_taskname", String(255), primary_key=True),
    Column("tm_username", String(64), nullable=False),
    Column("tm_task_status", String(50), nullable=False, default="SUBMITTED"),
    Column("tm_last_publication", BigInteger),
    Column("tm_publish_name", String(500)),
    Column("tm_publish_dbs_url", String(500)),
    Column("tm_creation_time", BigInteger, nullable=False),
)

file_metadata = Table(
    "filemetadata",
    metadata,
    Column("fmd_lfn", String(1000), primary_key=True),
    Column("fmd_taskname", String(255), nullable=False),
    Column("fmd_metadata", Text, nullable=False),
    Column("fmd_update_time", BigInteger, nullable=False),
    Index("ix_fmd_taskname", "fmd_taskname"),
)

#: each component instance's latest pass (one row per host and component)
component_passes = Table(
    "component_passes",
    metadata,
    Column("cp_host", String(255), primary_key=True),
    Column("cp_component", String(32), primary_key=True),
    Column("cp_pid", Integer, nullable=False),
    Column("cp_pass_id", String(200), nullable=False),
    Column("cp_started_ms", BigInteger, nullable=False),
    Column("cp_finished_ms", BigInteger),
    Column("cp_exit_code", SmallInteger),
    Column("cp_files", BigInteger, nullable=False, default=0),
    Column("cp_failures", BigInteger, nullable=False, default=0),
    Column("cp_summary", String(1000), nullable=False, default=""),
    Column("cp_last_success_ms", BigInteger),
)

#: each component instance's last heartbeat (v5): one row per (worker, component, host,
#: pid), so a restarted process is a new instance and its dead predecessor's row, silent,
#: never counts as live
heartbeats = Table(
    "heartbeats",
    metadata,
    Column("hb_worker", String(100), primary_key=True),
    Column("hb_component", String(32), primary_key=True),
    Column("hb_host", String(255), primary_key=True),
    Column("hb_pid", Integer, primary_key=True),
    Column("hb_started_ms", BigInteger, nullable=False),
    Column("hb_heartbeat_ms", BigInteger, nullable=False),
    Index("ix_hb_component_time", "hb_component", "hb_heartbeat_ms"),
)

#: each worker (an installation's [aso] worker name, v5): its fencing generation, raised
#: each time another worker takes its work over, and whether it is live or taken over
workers = Table(
    "workers",
    metadata,
    Column("w_worker", String(100), primary_key=True),
    Column("w_generation", Integer, nullable=False),
    Column("w_state", String(16), nullable=False),
    Column("w_taken_over_ms", BigInteger),
    Column("w_taken_over_by", String(100)),
)

#: finished rows moved out of filetransfersdb by ``aso archive`` (Rucio's requests_history):
#: the same columns, no primary key (a file re-injected after its row was archived may be
#: archived again), and when it was moved
transfers_history = Table(
    "filetransfersdb_history",
    metadata,
    *(Column(c.name, c.type, nullable=True) for c in transfers.columns),
    Column("tm_archived_time", BigInteger, nullable=False),
    Index("ix_ftdbh_id", "tm_id"),
    Index("ix_ftdbh_taskname", "tm_taskname"),
    Index("ix_ftdbh_archived", "tm_archived_time"),
)

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("applied", BigInteger, nullable=False),
)


def _create_v1(conn: Connection) -> None:
    metadata.create_all(conn, tables=[transfers, tasks, file_metadata], checkfirst=True)


def _v2_paths_and_inflight(conn: Connection) -> None:
    """The path column and the in-flight index of topology (a database made by v1 lacks
    them; one made now by v1's create_all already has them)."""
    names = {c["name"] for c in inspect(conn).get_columns(transfers.name)}
    if "tm_path" not in names:
        conn.execute(text(f"ALTER TABLE {transfers.name} ADD COLUMN tm_path VARCHAR(400)"))
    for index in transfers.indexes:
        if index.name == "ix_ftdb_inflight":
            index.create(conn, checkfirst=True)


def _v3_component_passes(conn: Connection) -> None:
    component_passes.create(conn, checkfirst=True)


def _v4_status_page_indexes(conn: Connection) -> None:
    for index in transfers.indexes:
        if index.name in ("ix_ftdb_live", "ix_ftdb_end", "ix_ftdb_failing"):
            index.create(conn, checkfirst=True)


def _v5_hosts(conn: Connection) -> None:
    """Heartbeats, workers and the rows' submission ids (several hosts taking over each
    other's work)."""
    names = {c["name"] for c in inspect(conn).get_columns(transfers.name)}
    if "tm_sid" not in names:
        conn.execute(text(f"ALTER TABLE {transfers.name} ADD COLUMN tm_sid VARCHAR(64)"))
    heartbeats.create(conn, checkfirst=True)
    workers.create(conn, checkfirst=True)


#: the partial indexes v6 adds to filetransfersdb
V6_INDEXES: tuple[str, ...] = ("ix_ftdb_kill", "ix_ftdb_user_tstate_worker")


def _v6_history(conn: Connection) -> None:
    """The archive table of ``aso archive``, and the partial indexes that keep the
    pipeline's scans on live rows (a table of millions of finished rows must not slow them)."""
    transfers_history.create(conn, checkfirst=True)
    conn.execute(text("DROP INDEX IF EXISTS ix_ftdb_user_tstate"))
    for index in transfers.indexes:
        if index.name in V6_INDEXES:
            index.create(conn, checkfirst=True)


def _v7_publication_pages(conn: Connection) -> None:
    """The publisher's index gains the user (it reads its rows a page of users at a time);
    the new index replaces the old one, whose columns lead it."""
    conn.execute(text("DROP INDEX IF EXISTS ix_ftdb_worker_pstate"))
    for index in transfers.indexes:
        if index.name == "ix_ftdb_worker_pstate_user":
            index.create(conn, checkfirst=True)


#: Ordered migrations: (version, function). Append; never edit a released one.
MIGRATIONS: list[tuple[int, Callable[[Connection], None]]] = [
    (1, _create_v1),
    (2, _v2_paths_and_inflight),
    (3, _v3_component_passes),
    (4, _v4_status_page_indexes),
    (5, _v5_hosts),
    (6, _v6_history),
    (7, _v7_publication_pages),
]

LATEST_VERSION = MIGRATIONS[-1][0]

TASK_COLUMNS = [c.name for c in tasks.columns]
