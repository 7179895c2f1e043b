"""The embedded FTS service's tables, the records read from them, and their FTS3 renderings.

Shared by the job store (the REST side, ``db.py``) and the executor's queries
(``db_queue.py``): the schema, the file and job keys FTS3 answers with, the small records
the scheduler and workers use, and the one function that re-derives a job's state.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aso.ftsd import jobs as fj

_SCHEMA = """
CREATE TABLE IF NOT EXISTS t_job (
    job_id              TEXT PRIMARY KEY,
    job_state           TEXT NOT NULL,
    job_type            TEXT NOT NULL,
    source_se           TEXT,
    dest_se             TEXT,
    user_dn             TEXT NOT NULL,
    cred_id             TEXT NOT NULL,
    vo_name             TEXT NOT NULL,
    reason              TEXT,
    submit_time         REAL NOT NULL,
    job_finished        REAL,
    priority            INTEGER NOT NULL,
    max_time_in_queue   INTEGER,
    retry               INTEGER NOT NULL,
    retry_delay         INTEGER NOT NULL,
    overwrite_flag      TEXT NOT NULL,
    verify_checksum     TEXT NOT NULL,
    job_metadata        TEXT NOT NULL,
    internal_job_params TEXT,
    submit_host         TEXT,
    cancel_job          TEXT,
    -- multihop jobs (H): the number of hops (the last one is file_index hop_count - 1)
    hop_count           INTEGER
);
CREATE INDEX IF NOT EXISTS ix_job_state ON t_job (job_state);
CREATE INDEX IF NOT EXISTS ix_job_vo ON t_job (vo_name, submit_time);
CREATE TABLE IF NOT EXISTS t_file (
    file_id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id           TEXT NOT NULL REFERENCES t_job (job_id),
    file_index       INTEGER NOT NULL,
    file_state       TEXT NOT NULL,
    source_surl      TEXT NOT NULL,
    dest_surl        TEXT NOT NULL,
    source_se        TEXT NOT NULL,
    dest_se          TEXT NOT NULL,
    vo_name          TEXT NOT NULL,
    activity         TEXT NOT NULL,
    checksum         TEXT NOT NULL,
    user_filesize    INTEGER,
    filesize         INTEGER,
    reason           TEXT,
    recoverable      INTEGER,
    retry            INTEGER NOT NULL DEFAULT 0,
    retry_timestamp  REAL,
    start_time       REAL,
    finish_time      REAL,
    tx_duration      REAL,
    throughput       REAL,
    transfer_host    TEXT,
    file_metadata    TEXT NOT NULL,
    selection_strategy TEXT NOT NULL DEFAULT 'auto',
    -- the job's priority, kept here so the queue is read in order from an index
    priority         INTEGER NOT NULL DEFAULT 3,
    -- bytes of the destination's partial file known to be on disk (fsynced)
    transferred      INTEGER NOT NULL DEFAULT 0,
    -- set just before the partial file is renamed into place: after a crash the
    -- destination file may already be the finished copy
    committing       INTEGER NOT NULL DEFAULT 0,
    -- finished by finding a verified copy at the destination (an intermediate hop) that this
    -- service did not leave there: never its to delete
    reused           INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS ix_file_queue ON t_file (file_state, retry_timestamp);
CREATE INDEX IF NOT EXISTS ix_file_job ON t_file (job_id);
CREATE TABLE IF NOT EXISTS t_file_retry_errors (
    file_id       INTEGER NOT NULL,
    attempt       INTEGER NOT NULL,
    datetime      REAL NOT NULL,
    reason        TEXT,
    transfer_host TEXT,
    PRIMARY KEY (file_id, attempt)
);
-- scratch copies to delete (the intermediate destinations of multihop jobs), written in the
-- transaction that ends their job, so a restart loses none
CREATE TABLE IF NOT EXISTS t_cleanup (
    cleanup_id  INTEGER PRIMARY KEY AUTOINCREMENT,
    url         TEXT NOT NULL,
    job_id      TEXT NOT NULL,
    not_before  REAL NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS ix_cleanup_due ON t_cleanup (not_before);
"""

#: columns added after the first release: (table, column, definition, how to fill it for
#: rows that were there before), added to older databases
_ADDED_COLUMNS = (
    ("t_file", "selection_strategy", "TEXT NOT NULL DEFAULT 'auto'", None),
    ("t_file", "priority", "INTEGER NOT NULL DEFAULT 3",
     "UPDATE t_file SET priority = (SELECT priority FROM t_job WHERE t_job.job_id = t_file.job_id)"),
    ("t_job", "hop_count", "INTEGER", None),
    ("t_file", "reused", "INTEGER NOT NULL DEFAULT 0", None),
    # bring-online (aso.ftsd.staging): the job's request, each file's staging times, and the
    # local path of a source on tape (NULL: not on tape)
    ("t_job", "bring_online", "INTEGER NOT NULL DEFAULT -1", None),
    ("t_job", "copy_pin_lifetime", "INTEGER NOT NULL DEFAULT -1", None),
    ("t_file", "staging_start", "REAL", None),
    ("t_file", "staging_finished", "REAL", None),
    ("t_file", "staging_host", "TEXT", None),
    ("t_file", "tape_path", "TEXT", None),
)
#: indexes over added columns (created once the columns exist)
_LATE_INDEXES = """
CREATE INDEX IF NOT EXISTS ix_file_ready ON t_file (file_state, priority DESC, file_id);
CREATE INDEX IF NOT EXISTS ix_file_tape ON t_file (tape_path) WHERE tape_path IS NOT NULL;
"""


def add_missing_columns(conn: sqlite3.Connection) -> None:
    """Bring a database made by an older version up to the schema (its queued files keep going)."""
    for table, column, definition, fill in _ADDED_COLUMNS:
        if column not in {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
            if fill:
                conn.execute(fill)
    conn.executescript(_LATE_INDEXES)


JOB_KEYS = (
    "job_id", "source_se", "dest_se", "job_state", "job_type", "cancel_job", "submit_host", "user_dn",
    "cred_id", "vo_name", "reason", "submit_time", "job_finished", "priority", "max_time_in_queue",
    "retry", "retry_delay", "destination_spacetoken", "source_spacetoken", "internal_job_params",
    "dst_file_report", "overwrite_flag", "copy_pin_lifetime", "bring_online", "archive_timeout",
    "target_qos", "os_project_id", "verify_checksum", "job_metadata",
)
FILE_KEYS = (
    "file_id", "hashed_id", "file_index", "job_id", "dest_surl_uuid", "vo_name", "priority", "file_state",
    "source_se", "dest_se", "source_surl", "dest_surl", "transfer_host", "staging_host", "reason",
    "recoverable", "filesize", "user_filesize", "checksum", "tx_duration", "throughput", "retry", "pid",
    "internal_file_params", "start_time", "finish_time", "staging_start", "staging_finished",
    "archive_start_time", "archive_finish_time", "file_metadata", "staging_metadata", "archive_metadata",
    "selection_strategy", "bringonline_token", "log_file", "log_debug", "activity", "scitag",
    "src_token_id", "dst_token_id", "file_state_initial",
)
_TIME_KEYS = ("submit_time", "job_finished", "start_time", "finish_time", "staging_start", "staging_finished")
USER_CANCEL_REASON = "Job canceled by the user"
FILE_CANCEL_REASON = "File canceled by the user"
QUEUE_TIMEOUT_REASON = "Job has been canceled because it stayed in the queue for too long (max-time-in-queue timeout)"
_WORKING = ("READY", "ACTIVE")


@dataclass(frozen=True)
class QueuedFile:
    """A file waiting for a copy slot, with what the scheduler orders and limits by."""

    file_id: int
    job_id: str
    source_se: str
    dest_se: str
    priority: int
    submit_time: float
    file_index: int

    @property
    def link(self) -> tuple[str, str]:
        return (self.source_se, self.dest_se)


@dataclass(frozen=True)
class CopyTask:
    """Everything a worker needs to copy one file."""

    file_id: int
    job_id: str
    source: str
    destination: str
    checksum: str
    user_filesize: int | None
    overwrite: bool
    verify_checksum: str
    internal: dict
    transferred: int
    committing: bool
    attempt: int
    #: an intermediate hop of a multihop job with a submitted checksum: a complete, verified
    #: copy already at its destination is taken instead of copying again
    reusable: bool = False
    #: the source is a file on tape that is not online (its copy fails: aso.ftsd.staging)
    source_nearline: bool = False


@dataclass(frozen=True)
class Finished:
    """What ``finish`` did: the file's new state and whether its job ended."""

    file_state: str
    job_state: str
    retried: bool
    #: a multihop job's next hop was let go (NOT_USED -> SUBMITTED): a scheduling round is due
    promoted: bool = False


def _now() -> float:
    return time.time()


def refresh_job(conn: sqlite3.Connection, job_id: str, now: float, multihop: bool | None = False,
                cleanup_delay: float | None = None) -> str:
    """Re-derive a job's state from its files' (inside the caller's transaction).

    ``multihop``: whether the job is of type H (None: look it up). With ``cleanup_delay``, a
    multihop job that ends here has its scratch copies queued for deletion: at once after
    its last hop finished, ``cleanup_delay`` seconds after a failure (a resubmission may reuse them)."""
    if multihop is None:
        multihop = conn.execute("SELECT job_type FROM t_job WHERE job_id = ?", (job_id,)).fetchone()[0] == "H"
    states = [r[0] for r in conn.execute("SELECT file_state FROM t_file WHERE job_id = ?", (job_id,))]
    state = fj.job_state(states, multihop)
    if state in fj.JOB_TERMINAL:
        ended = conn.execute(
            "UPDATE t_job SET job_state = ?, reason = ?, job_finished = ? WHERE job_id = ? AND job_state NOT IN"
            " ('FINISHED', 'FINISHEDDIRTY', 'FAILED', 'CANCELED')",
            (state, fj.job_reason(state), now, job_id),
        ).rowcount
        if ended and multihop and cleanup_delay is not None:
            queue_cleanup(conn, job_id, now if state == "FINISHED" else now + cleanup_delay)
    else:
        conn.execute("UPDATE t_job SET job_state = ? WHERE job_id = ? AND job_state IN ('SUBMITTED', 'ACTIVE', 'STAGING')",
                     (state, job_id))
    return state


def queue_cleanup(conn: sqlite3.Connection, job_id: str, not_before: float) -> int:
    """The scratch copies of a multihop job that ended: the destinations of its intermediate
    hops that finished by copying or by reusing a scratch copy of an earlier job (a hop that
    never finished wrote nothing, and one that found someone else's file there must leave it
    there). Returns how many were queued."""
    return conn.execute(
        "INSERT INTO t_cleanup (url, job_id, not_before)"
        " SELECT f.dest_surl, f.job_id, ? FROM t_file f JOIN t_job j USING (job_id)"
        " WHERE f.job_id = ? AND f.file_state = 'FINISHED' AND f.file_index < j.hop_count - 1 AND f.reused = 0",
        (not_before, job_id),
    ).rowcount


def _loads(text: str | None) -> Any:
    return json.loads(text) if text else None


def _rendered(row: sqlite3.Row, keys: tuple[str, ...]) -> dict:
    """FTS3's keys (None where the table has no column) from a row, times as FTS3 prints them."""
    data = dict.fromkeys(keys)
    data.update({k: row[k] for k in row.keys() if k in data})  # noqa: SIM118 - sqlite3.Row
    for key in _TIME_KEYS:
        if key in data:
            data[key] = fj.fts_time(data[key])
    return data


def render_job(row: sqlite3.Row) -> dict:
    data = _rendered(row, JOB_KEYS)
    data["job_metadata"] = _loads(row["job_metadata"]) or {}
    data["internal_job_params"] = row["internal_job_params"] and ",".join(
        f"{k}:{v}" for k, v in json.loads(row["internal_job_params"]).items()
    )
    data["archive_timeout"] = -1
    data["dst_file_report"] = False
    return data


def render_file(row: sqlite3.Row, keys: Sequence[str] | None = None) -> dict:
    """A file as FTS3 shows it; only ``keys`` of it when given (a bulk status names the
    fields it wants, and rendering all of them for thousands of files was most of its
    cost)."""
    if keys is not None:
        return {key: _file_value(row, key) for key in keys}
    data = _rendered(row, FILE_KEYS)
    data["file_metadata"] = _loads(row["file_metadata"]) or {}
    data["recoverable"] = bool(row["recoverable"]) if row["recoverable"] is not None else None
    data["file_state_initial"] = "SUBMITTED"
    data["selection_strategy"] = row["selection_strategy"]
    data["dest_surl_uuid"] = str(uuid.uuid5(fj.BASE_ID, row["dest_surl"]))
    data["hashed_id"] = row["file_id"] % 2**16
    return data


def _file_value(row: sqlite3.Row, key: str) -> Any:
    """One field of :func:`render_file`'s full rendering."""
    if key == "file_metadata":
        return _loads(row["file_metadata"]) or {}
    if key == "recoverable":
        return bool(row["recoverable"]) if row["recoverable"] is not None else None
    if key == "file_state_initial":
        return "SUBMITTED"
    if key == "dest_surl_uuid":
        return str(uuid.uuid5(fj.BASE_ID, row["dest_surl"]))
    if key == "hashed_id":
        return row["file_id"] % 2**16
    if key not in row.keys():  # noqa: SIM118 - sqlite3.Row
        return None
    return fj.fts_time(row[key]) if key in _TIME_KEYS else row[key]
