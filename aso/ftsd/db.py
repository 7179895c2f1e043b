"""Jobs and files of the embedded FTS service, in SQLite.

Every state change of a file happens here, in one transaction that also re-derives its
job's state, so the REST layer and the executor can never disagree about a job. Changes
made by a worker carry a guard (the file must still be READY or ACTIVE), so a file that was
canceled or expired while it was being copied keeps the state the user gave it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aso.ftsd import jobs as fj
from aso.ftsd.errors import FtsHttpError
from aso.ftsd.identity import Identity

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
    cancel_job          TEXT
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
    -- bytes of the destination's partial file known to be on disk (fsynced)
    transferred      INTEGER NOT NULL DEFAULT 0,
    -- set just before the partial file is renamed into place: after a crash the
    -- destination file may already be the finished copy
    committing       INTEGER NOT NULL DEFAULT 0
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
"""

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
_TIME_KEYS = ("submit_time", "job_finished", "start_time", "finish_time")
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


@dataclass(frozen=True)
class Finished:
    """What ``finish`` did: the file's new state and whether its job ended."""

    file_state: str
    job_state: str
    retried: bool


def _now() -> float:
    return time.time()


class JobStore:
    """One SQLite connection shared by the HTTP threads and the executor, behind a lock: every
    call is a short transaction, and SQLite serialises writers anyway."""

    def __init__(self, path: str | Path, host: str = "localhost"):
        self.path = str(path)
        self.host = host
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL is durable across a killed process (WAL); only a power cut can lose the last
        # commits, and those are checkpoints a copy then simply redoes.
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute("PRAGMA busy_timeout = 30000")
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _read(self, sql: str, args: Sequence = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    # -- submission ---------------------------------------------------------------------

    def submit(self, spec: fj.JobSpec, identity: Identity, job_id: str | None = None, now: float | None = None) -> str:
        """Record a job and its files (all or nothing); 409 when the id exists already."""
        now = _now() if now is None else now
        if job_id is None:
            job_id = str(fj.deterministic_job_id(identity.vo_name, spec.sid) if spec.deterministic else uuid.uuid1())
        pairs = {(f.source_se, f.dest_se) for f in spec.files}
        source_se, dest_se = next(iter(pairs)) if len(pairs) == 1 else (None, None)
        metadata = {**spec.job_metadata, "auth_method": identity.method}
        with self._tx() as conn:
            try:
                conn.execute(
                    "INSERT INTO t_job (job_id, job_state, job_type, source_se, dest_se, user_dn, cred_id, vo_name,"
                    " submit_time, priority, max_time_in_queue, retry, retry_delay, overwrite_flag, verify_checksum,"
                    " job_metadata, internal_job_params, submit_host)"
                    " VALUES (?, 'SUBMITTED', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (job_id, spec.job_type, source_se, dest_se, identity.user_dn, identity.delegation_id,
                     identity.vo_name, now, spec.priority, spec.max_time_in_queue, spec.retry, spec.retry_delay,
                     "Y" if spec.overwrite else "N", spec.verify_checksum, json.dumps(metadata),
                     json.dumps(spec.internal) if spec.internal else None, self.host),
                )
            except sqlite3.IntegrityError:
                raise FtsHttpError(409, f"A job with the id {job_id} exists already (sid {spec.sid!r} was submitted before)") from None
            conn.executemany(
                "INSERT INTO t_file (job_id, file_index, file_state, source_surl, dest_surl, source_se, dest_se,"
                " vo_name, activity, checksum, user_filesize, file_metadata)"
                " VALUES (?, ?, 'SUBMITTED', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(job_id, f.file_index, f.source, f.destination, f.source_se, f.dest_se, identity.vo_name,
                  f.activity, str(f.checksum), f.filesize, json.dumps(f.metadata)) for f in spec.files],
            )
        return job_id

    # -- reading ------------------------------------------------------------------------

    def jobs(self, job_ids: Sequence[str]) -> dict[str, dict]:
        """Job rows by id (unknown ids are absent), rendered as FTS3 renders them."""
        if not job_ids:
            return {}
        marks = ",".join("?" * len(job_ids))
        return {r["job_id"]: render_job(r) for r in self._read(f"SELECT * FROM t_job WHERE job_id IN ({marks})", list(job_ids))}

    def files(self, job_ids: Sequence[str]) -> dict[str, list[dict]]:
        """Files of each job, in file_index order."""
        out: dict[str, list[dict]] = {j: [] for j in job_ids}
        if not job_ids:
            return out
        marks = ",".join("?" * len(job_ids))
        rows = self._read(
            f"SELECT f.*, j.priority AS priority FROM t_file f JOIN t_job j USING (job_id)"
            f" WHERE f.job_id IN ({marks}) ORDER BY f.job_id, f.file_index, f.file_id",
            list(job_ids),
        )
        for r in rows:
            out[r["job_id"]].append(render_file(r))
        return out

    def retries(self, job_id: str, file_id: int) -> list[dict]:
        rows = self._read(
            "SELECT e.* FROM t_file_retry_errors e JOIN t_file f USING (file_id)"
            " WHERE f.job_id = ? AND e.file_id = ? ORDER BY e.attempt",
            (job_id, file_id),
        )
        return [{"file_id": r["file_id"], "attempt": r["attempt"], "datetime": fj.fts_time(r["datetime"]),
                 "reason": r["reason"], "transfer_host": r["transfer_host"], "log_file": None} for r in rows]

    def list_jobs(
        self,
        *,
        vo_names: Iterable[str] | None = None,
        user_dn: str | None = None,
        dlg_id: str | None = None,
        states: Iterable[str] | None = None,
        source_se: str | None = None,
        dest_se: str | None = None,
        finished_after: float | None = None,
        limit: int | None = None,
    ) -> list[dict]:
        where, args = [], []
        for column, values in (("vo_name", vo_names), ("job_state", states)):
            if values is not None:
                values = list(values)
                where.append(f"{column} IN ({','.join('?' * len(values))})" if values else "0")
                args += values
        for column, value in (("user_dn", user_dn), ("cred_id", dlg_id), ("source_se", source_se), ("dest_se", dest_se)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if finished_after is not None:
            where.append("(job_finished IS NULL OR job_finished >= ?)")
            args.append(finished_after)
        sql = "SELECT * FROM t_job" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY submit_time DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [render_job(r) for r in self._read(sql, args)]

    def counts(self) -> dict[str, int]:
        """Files per state (for the log and the benchmarks)."""
        return {r[0]: r[1] for r in self._read("SELECT file_state, COUNT(*) FROM t_file GROUP BY file_state")}

    # -- user actions -------------------------------------------------------------------

    def cancel_jobs(self, job_ids: Sequence[str], now: float | None = None, reason: str = USER_CANCEL_REASON) -> tuple[dict[str, dict], list[int]]:
        """Cancel jobs: their unfinished files become CANCELED, the jobs CANCELED. Returns the
        jobs as they are afterwards and the files that were being copied (to interrupt)."""
        now = _now() if now is None else now
        if not job_ids:
            return {}, []
        marks = ",".join("?" * len(job_ids))
        with self._tx() as conn:
            active = [r["job_id"] for r in conn.execute(
                f"SELECT job_id FROM t_job WHERE job_id IN ({marks}) AND job_state IN ({','.join('?' * len(fj.JOB_ACTIVE))})",
                [*job_ids, *fj.JOB_ACTIVE],
            )]
            interrupted = self._cancel_files_of(conn, active, None, reason, now)
            if active:
                amarks = ",".join("?" * len(active))
                conn.execute(
                    f"UPDATE t_job SET job_state = 'CANCELED', reason = ?, job_finished = ?, cancel_job = 'Y'"
                    f" WHERE job_id IN ({amarks})",
                    [reason, now, *active],
                )
        return self.jobs(job_ids), interrupted

    def cancel_files(self, job_id: str, file_ids: Sequence[int], now: float | None = None) -> tuple[dict[int, str], list[int]]:
        """Cancel some files of one job. Returns, per requested file id, "CANCELED", the file's
        terminal state, or None when the file is not in the job; and the files to interrupt."""
        now = _now() if now is None else now
        with self._tx() as conn:
            rows = {r["file_id"]: r["file_state"] for r in conn.execute(
                f"SELECT file_id, file_state FROM t_file WHERE job_id = ? AND file_id IN ({','.join('?' * len(file_ids))})",
                [job_id, *file_ids],
            )}
            todo = [f for f in file_ids if f in rows and rows[f] not in fj.FILE_TERMINAL]
            interrupted = self._cancel_files_of(conn, [job_id], todo, FILE_CANCEL_REASON, now)
            remaining = conn.execute(
                f"SELECT COUNT(*) FROM t_file WHERE job_id = ? AND file_state NOT IN ({','.join('?' * len(fj.FILE_TERMINAL))})",
                [job_id, *fj.FILE_TERMINAL],
            ).fetchone()[0]
            if todo and not remaining:
                conn.execute(
                    "UPDATE t_job SET job_state = 'CANCELED', reason = ?, job_finished = ? WHERE job_id = ?",
                    (fj.FAILED_JOB_REASON, now, job_id),
                )
        result = {f: ("CANCELED" if f in todo else rows.get(f)) for f in file_ids}
        return result, interrupted

    @staticmethod
    def _cancel_files_of(conn, job_ids: list[str], file_ids: list[int] | None, reason: str, now: float) -> list[int]:
        if not job_ids or file_ids == []:
            return []
        jmarks = ",".join("?" * len(job_ids))
        scope, args = f"job_id IN ({jmarks})", list(job_ids)
        if file_ids is not None:
            scope += f" AND file_id IN ({','.join('?' * len(file_ids))})"
            args += list(file_ids)
        working = [r[0] for r in conn.execute(
            f"SELECT file_id FROM t_file WHERE {scope} AND file_state IN ('READY', 'ACTIVE')", args
        )]
        conn.execute(
            f"UPDATE t_file SET file_state = 'CANCELED', reason = ?, finish_time = ?"
            f" WHERE {scope} AND file_state NOT IN ('FINISHED', 'FAILED', 'CANCELED')",
            [reason, now, *args],
        )
        return working

    def set_priority(self, job_ids: Sequence[str], priority: int) -> dict[str, dict]:
        with self._tx() as conn:
            conn.executemany("UPDATE t_job SET priority = ? WHERE job_id = ?", [(priority, j) for j in job_ids])
        return self.jobs(job_ids)

    # -- scheduling and execution --------------------------------------------------------

    def expire_overdue(self, now: float | None = None) -> list[int]:
        """Cancel jobs whose max_time_in_queue has passed, as FTS3 does; returns the files
        that were being copied."""
        now = _now() if now is None else now
        overdue = [r[0] for r in self._read(
            f"SELECT job_id FROM t_job WHERE max_time_in_queue IS NOT NULL AND max_time_in_queue < ?"
            f" AND job_state IN ({','.join('?' * len(fj.JOB_ACTIVE))})",
            [now, *fj.JOB_ACTIVE],
        )]
        if not overdue:
            return []
        _, interrupted = self.cancel_jobs(overdue, now, QUEUE_TIMEOUT_REASON)
        return interrupted

    def queued(self, now: float | None = None, limit: int = 10_000) -> list[QueuedFile]:
        """Files waiting for a slot (retries only once their delay is over), best first."""
        now = _now() if now is None else now
        rows = self._read(
            "SELECT f.file_id, f.job_id, f.source_se, f.dest_se, j.priority, j.submit_time, f.file_index"
            " FROM t_file f JOIN t_job j USING (job_id)"
            " WHERE f.file_state = 'SUBMITTED' AND (f.retry_timestamp IS NULL OR f.retry_timestamp <= ?)"
            " ORDER BY j.priority DESC, j.submit_time, f.file_id LIMIT ?",
            (now, limit),
        )
        return [QueuedFile(*tuple(r)) for r in rows]

    def claim(self, file_ids: Sequence[int], host: str | None = None) -> list[CopyTask]:
        """SUBMITTED → READY for the chosen files (those still SUBMITTED); their jobs go ACTIVE."""
        if not file_ids:
            return []
        marks = ",".join("?" * len(file_ids))
        with self._tx() as conn:
            conn.execute(
                f"UPDATE t_file SET file_state = 'READY', transfer_host = ? WHERE file_id IN ({marks}) AND file_state = 'SUBMITTED'",
                [host or self.host, *file_ids],
            )
            rows = conn.execute(
                f"SELECT f.file_id, f.job_id, f.source_surl, f.dest_surl, f.checksum, f.user_filesize, j.overwrite_flag,"
                f" j.verify_checksum, j.internal_job_params, f.transferred, f.committing, f.retry"
                f" FROM t_file f JOIN t_job j USING (job_id) WHERE f.file_id IN ({marks}) AND f.file_state = 'READY'",
                list(file_ids),
            ).fetchall()
            jobs = {r["job_id"] for r in rows}
            if jobs:
                conn.execute(
                    f"UPDATE t_job SET job_state = 'ACTIVE' WHERE job_id IN ({','.join('?' * len(jobs))}) AND job_state = 'SUBMITTED'",
                    list(jobs),
                )
        return [
            CopyTask(r["file_id"], r["job_id"], r["source_surl"], r["dest_surl"], r["checksum"], r["user_filesize"],
                     r["overwrite_flag"] == "Y", r["verify_checksum"], json.loads(r["internal_job_params"] or "{}"),
                     r["transferred"], bool(r["committing"]), r["retry"])
            for r in rows
        ]

    def start(self, file_id: int, now: float | None = None) -> bool:
        """READY → ACTIVE; False when the file was canceled in between."""
        now = _now() if now is None else now
        with self._tx() as conn:
            return conn.execute(
                "UPDATE t_file SET file_state = 'ACTIVE', start_time = ?, reason = NULL WHERE file_id = ? AND file_state = 'READY'",
                (now, file_id),
            ).rowcount == 1

    def checkpoint(self, file_id: int, transferred: int, committing: bool = False) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE t_file SET transferred = ?, committing = ? WHERE file_id = ? AND file_state IN ('READY', 'ACTIVE')",
                (transferred, int(committing), file_id),
            )

    def release(self, file_ids: Sequence[int]) -> None:
        """Working files back to the queue without counting an attempt (service stopping,
        or restarted after a crash); their checkpoints stay, so the copies resume."""
        if not file_ids:
            return
        with self._tx() as conn:
            conn.execute(
                f"UPDATE t_file SET file_state = 'SUBMITTED' WHERE file_id IN ({','.join('?' * len(file_ids))})"
                f" AND file_state IN ('READY', 'ACTIVE')",
                list(file_ids),
            )

    def recover(self) -> list[int]:
        """At start-up: files a previous run was copying go back to the queue."""
        ids = [r[0] for r in self._read("SELECT file_id FROM t_file WHERE file_state IN ('READY', 'ACTIVE')")]
        self.release(ids)
        return ids

    def finish(
        self,
        file_id: int,
        state: str,
        *,
        reason: str | None = None,
        recoverable: bool = False,
        filesize: int | None = None,
        checksum: str | None = None,
        default_retry: int = 0,
        now: float | None = None,
    ) -> Finished | None:
        """A copy ended: FINISHED, or FAILED (queued again when recoverable with retries left).
        None when the file is no longer READY/ACTIVE (canceled or expired meanwhile)."""
        now = _now() if now is None else now
        with self._tx() as conn:
            row = conn.execute(
                "SELECT f.job_id, f.retry, f.start_time, f.transfer_host, j.retry AS job_retry, j.retry_delay"
                " FROM t_file f JOIN t_job j USING (job_id) WHERE f.file_id = ? AND f.file_state IN ('READY', 'ACTIVE')",
                (file_id,),
            ).fetchone()
            if row is None:
                return None
            allowed = row["job_retry"] if row["job_retry"] > 0 else (default_retry if row["job_retry"] == 0 else 0)
            retried = state == "FAILED" and recoverable and row["retry"] < allowed
            duration = max(0.0, now - row["start_time"]) if row["start_time"] else None
            if retried:
                conn.execute(
                    "INSERT OR REPLACE INTO t_file_retry_errors (file_id, attempt, datetime, reason, transfer_host)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (file_id, row["retry"] + 1, now, reason, row["transfer_host"]),
                )
                conn.execute(
                    "UPDATE t_file SET file_state = 'SUBMITTED', retry = retry + 1, retry_timestamp = ?, reason = ?,"
                    " recoverable = 1 WHERE file_id = ?",
                    (now + row["retry_delay"], reason, file_id),
                )
                return Finished("SUBMITTED", self._refresh_job(conn, row["job_id"], now), True)
            throughput = (filesize / duration / 1e6) if (state == "FINISHED" and filesize and duration) else None
            conn.execute(
                "UPDATE t_file SET file_state = ?, reason = ?, recoverable = ?, finish_time = ?, tx_duration = ?,"
                " throughput = ?, filesize = COALESCE(?, filesize), checksum = COALESCE(?, checksum),"
                " transferred = CASE WHEN ? = 'FINISHED' THEN transferred ELSE 0 END, committing = 0"
                " WHERE file_id = ?",
                (state, reason, int(recoverable), now, duration, throughput, filesize, checksum, state, file_id),
            )
            return Finished(state, self._refresh_job(conn, row["job_id"], now), False)

    def simulate(self, limit: int = 5000, now: float | None = None) -> int:
        """Simulation mode: queued files are marked FINISHED at once (their declared size,
        no data moved), in one transaction per batch. Returns how many."""
        now = _now() if now is None else now
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT file_id, job_id FROM t_file WHERE file_state = 'SUBMITTED'"
                " AND (retry_timestamp IS NULL OR retry_timestamp <= ?) LIMIT ?",
                (now, limit),
            ).fetchall()
            if not rows:
                return 0
            conn.executemany(
                "UPDATE t_file SET file_state = 'FINISHED', start_time = ?, finish_time = ?, tx_duration = 0,"
                " filesize = user_filesize, transfer_host = ? WHERE file_id = ?",
                [(now, now, self.host, r["file_id"]) for r in rows],
            )
            for job_id in {r["job_id"] for r in rows}:
                self._refresh_job(conn, job_id, now)
        return len(rows)

    @staticmethod
    def _refresh_job(conn, job_id: str, now: float) -> str:
        states = [r[0] for r in conn.execute("SELECT file_state FROM t_file WHERE job_id = ?", (job_id,))]
        state = fj.job_state(states)
        if state in fj.JOB_TERMINAL:
            conn.execute(
                "UPDATE t_job SET job_state = ?, reason = ?, job_finished = ? WHERE job_id = ? AND job_state NOT IN"
                " ('FINISHED', 'FINISHEDDIRTY', 'FAILED', 'CANCELED')",
                (state, fj.job_reason(state), now, job_id),
            )
        else:
            conn.execute("UPDATE t_job SET job_state = ? WHERE job_id = ? AND job_state IN ('SUBMITTED', 'ACTIVE')", (state, job_id))
        return state


def _loads(text: str | None) -> Any:
    return json.loads(text) if text else None


def render_job(row: sqlite3.Row) -> dict:
    data = dict.fromkeys(JOB_KEYS)
    data.update({k: row[k] for k in row.keys() if k in data})  # noqa: SIM118 - sqlite3.Row
    for key in _TIME_KEYS:
        if key in data:
            data[key] = fj.fts_time(data[key])
    data["job_metadata"] = _loads(row["job_metadata"]) or {}
    data["internal_job_params"] = row["internal_job_params"] and ",".join(
        f"{k}:{v}" for k, v in json.loads(row["internal_job_params"]).items()
    )
    data["copy_pin_lifetime"] = -1
    data["bring_online"] = -1
    data["archive_timeout"] = -1
    data["dst_file_report"] = False
    return data


def render_file(row: sqlite3.Row) -> dict:
    data = dict.fromkeys(FILE_KEYS)
    data.update({k: row[k] for k in row.keys() if k in data})  # noqa: SIM118 - sqlite3.Row
    for key in _TIME_KEYS:
        if key in data:
            data[key] = fj.fts_time(data[key])
    data["file_metadata"] = _loads(row["file_metadata"]) or {}
    data["recoverable"] = bool(row["recoverable"]) if row["recoverable"] is not None else None
    data["file_state_initial"] = "SUBMITTED"
    data["selection_strategy"] = "auto"
    data["dest_surl_uuid"] = str(uuid.uuid5(fj.BASE_ID, row["dest_surl"]))
    data["hashed_id"] = row["file_id"] % 2**16
    return data
