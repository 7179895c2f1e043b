"""Jobs and files of the embedded FTS service, in SQLite: the store and its REST side.

Every state change of a file happens in the store, in one transaction that also re-derives
its job's state, so the REST layer and the executor can never disagree about a job. This
module holds the connection, submission, reads and the users' cancels and priorities; the
executor's queries are in ``db_queue.py``, the tables and records in ``db_rows.py``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from aso.ftsd import jobs as fj
from aso.ftsd.db_queue import ExecutorQueries
from aso.ftsd.db_rows import (  # noqa: F401 - the records are part of the store's interface
    _SCHEMA,
    FILE_CANCEL_REASON,
    FILE_KEYS,
    JOB_KEYS,
    QUEUE_TIMEOUT_REASON,
    USER_CANCEL_REASON,
    CopyTask,
    Finished,
    QueuedFile,
    _now,
    add_missing_columns,
    queue_cleanup,
    refresh_job,
    render_file,
    render_job,
)
from aso.ftsd.db_staging import TAPE_SCHEMA, StagingQueries
from aso.ftsd.errors import FtsHttpError
from aso.ftsd.identity import Identity
from aso.ftsd.outbox import OUTBOX_SCHEMA, Event, MessageSettings, queue_messages
from aso.ftsd.staging import tape_path


class JobStore(ExecutorQueries, StagingQueries):
    """SQLite shared by the HTTP threads and the executor: one connection for writes, behind
    a lock (every write is a short transaction, and SQLite serialises writers anyway), and one
    read connection per thread, so that answering a status request never holds up a copy
    recording its progress, nor the dispatcher reading the queue (WAL lets readers and a
    writer work at once)."""

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
        self._conn.executescript(_SCHEMA + OUTBOX_SCHEMA + TAPE_SCHEMA)
        add_missing_columns(self._conn)
        self._readers = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        #: set by the service when it publishes FTS3's messages (None: it does not)
        self.messages: MessageSettings | None = None
        #: set whenever messages were queued (the sender waits on it)
        self.outbox_wake = threading.Event()
        #: seconds a failed or canceled multihop job's scratch copies are kept (a resubmission
        #: may reuse them); set by the service from [fts_server] multihop_cleanup_delay
        self.cleanup_delay: float = 7200.0

    def close(self) -> None:
        with self._lock, self._readers_lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()
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

    def _queue(self, conn: sqlite3.Connection, events: Iterable[Event], now: float) -> None:
        """The messages for these state changes, into the outbox in the caller's transaction."""
        if self.messages is not None and queue_messages(conn, self.messages, events, now):
            self.outbox_wake.set()

    # -- the message outbox (aso.ftsd.outbox) ---------------------------------------------

    def outbox_batch(self, limit: int) -> list[tuple[int, str, str, float]]:
        return [tuple(r) for r in self._read(
            "SELECT msg_id, destination, body, created FROM t_outbox ORDER BY msg_id LIMIT ?", (limit,))]

    def outbox_delete(self, up_to: int) -> None:
        """Forget the messages the broker confirmed (all up to this id: sent in order)."""
        with self._tx() as conn:
            conn.execute("DELETE FROM t_outbox WHERE msg_id <= ?", (up_to,))

    def outbox_expire(self, before: float) -> int:
        with self._tx() as conn:
            return conn.execute("DELETE FROM t_outbox WHERE created < ?", (before,)).rowcount

    def outbox_count(self) -> int:
        return self._read("SELECT COUNT(*) FROM t_outbox")[0][0]

    def _read(self, sql: str, args: Sequence = ()) -> list[sqlite3.Row]:
        conn = getattr(self._readers, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 30000")
            self._readers.conn = conn
            with self._readers_lock:
                self._reader_conns.append(conn)
        return conn.execute(sql, args).fetchall()

    # -- submission ---------------------------------------------------------------------

    def submit(self, spec: fj.JobSpec, identity: Identity, job_id: str | None = None, now: float | None = None) -> str:
        """Record a job and its files (all or nothing); 409 when the id exists already."""
        now = _now() if now is None else now
        if job_id is None:
            job_id = str(fj.deterministic_job_id(identity.vo_name, spec.sid) if spec.deterministic else uuid.uuid1())
        multihop = spec.job_type == "H"
        if multihop:  # the job goes from where its first hop starts to where its last one ends
            source_se, dest_se = spec.files[0].source_se, spec.files[-1].dest_se
        else:
            pairs = {(f.source_se, f.dest_se) for f in spec.files}
            source_se, dest_se = next(iter(pairs)) if len(pairs) == 1 else (None, None)
        metadata = {**spec.job_metadata, "auth_method": identity.method}
        # a job with bring_online or copy_pin_lifetime stages first (a multihop job its first
        # hop); the tape robot (aso.ftsd.staging) lets its files go once they are online
        first = "STAGING" if spec.staging else "SUBMITTED"
        tapes = [tape_path(f.source, self.tape.roots) for f in spec.files]
        with self._tx() as conn:
            try:
                conn.execute(
                    "INSERT INTO t_job (job_id, job_state, job_type, source_se, dest_se, user_dn, cred_id, vo_name,"
                    " submit_time, priority, max_time_in_queue, retry, retry_delay, overwrite_flag, verify_checksum,"
                    " job_metadata, internal_job_params, submit_host, hop_count, bring_online, copy_pin_lifetime)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (job_id, first, spec.job_type, source_se, dest_se, identity.user_dn, identity.delegation_id,
                     identity.vo_name, now, spec.priority, spec.max_time_in_queue, spec.retry, spec.retry_delay,
                     "Y" if spec.overwrite else "N", spec.verify_checksum, json.dumps(metadata),
                     json.dumps(spec.internal) if spec.internal else None, self.host,
                     len(spec.files) if multihop else None, spec.bring_online, spec.copy_pin_lifetime),
                )
            except sqlite3.IntegrityError:
                raise FtsHttpError(409, f"A job with the id {job_id} exists already (sid {spec.sid!r} was submitted before)") from None
            states = [fj.HELD if multihop and f.file_index else first for f in spec.files]
            conn.executemany(
                "INSERT INTO t_file (job_id, file_index, file_state, source_surl, dest_surl, source_se, dest_se,"
                " vo_name, activity, checksum, user_filesize, file_metadata, selection_strategy, priority,"
                " tape_path, staging_start, staging_host)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                # a multihop job's later hops are held until the hop before them finished
                [(job_id, f.file_index, state, f.source, f.destination, f.source_se, f.dest_se, identity.vo_name,
                  f.activity, str(f.checksum), f.filesize, json.dumps(f.metadata), f.selection_strategy, spec.priority,
                  tape, *((now, self.host) if state == "STAGING" else (None, None)))
                 for f, state, tape in zip(spec.files, states, tapes, strict=True)],
            )
            recalls = [t for t, state in zip(tapes, states, strict=True) if t is not None and state == "STAGING"]
            if recalls:
                self._request_recalls(conn, recalls, max(0, spec.copy_pin_lifetime), now)
            if self.messages is not None:
                ids = [r[0] for r in conn.execute("SELECT file_id FROM t_file WHERE job_id = ?", (job_id,))]
                self._queue(conn, [(i, None, False) for i in ids], now)
        return job_id

    # -- reading ------------------------------------------------------------------------

    def jobs(self, job_ids: Sequence[str]) -> dict[str, dict]:
        """Job rows by id (unknown ids are absent), rendered as FTS3 renders them."""
        if not job_ids:
            return {}
        marks = ",".join("?" * len(job_ids))
        return {r["job_id"]: render_job(r) for r in self._read(f"SELECT * FROM t_job WHERE job_id IN ({marks})", list(job_ids))}

    def files(self, job_ids: Sequence[str], keys: Sequence[str] | None = None) -> dict[str, list[dict]]:
        """Files of each job, in file_index order (only their ``keys`` when given)."""
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
            out[r["job_id"]].append(render_file(r, keys))
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

    def queue_depth(self) -> dict[tuple[str, str], int]:
        """Files queued (SUBMITTED) per (source_se, dest_se), for /metrics: the queued files
        found through ix_file_queue, not a scan of the table."""
        return {(r[0], r[1]): r[2] for r in self._read(
            "SELECT source_se, dest_se, COUNT(*) FROM t_file WHERE file_state = 'SUBMITTED' GROUP BY source_se, dest_se")}

    # -- user actions -------------------------------------------------------------------

    def cancel_jobs(self, job_ids: Sequence[str], now: float | None = None, reason: str = USER_CANCEL_REASON) -> tuple[dict[str, dict], list[int]]:
        """Cancel jobs: their unfinished files become CANCELED, the jobs CANCELED. Returns the
        jobs as they are afterwards and the files that were being copied (to interrupt)."""
        now = _now() if now is None else now
        if not job_ids:
            return {}, []
        marks = ",".join("?" * len(job_ids))
        with self._tx() as conn:
            rows = conn.execute(
                f"SELECT job_id, job_type FROM t_job WHERE job_id IN ({marks})"
                f" AND job_state IN ({','.join('?' * len(fj.JOB_ACTIVE))})",
                [*job_ids, *fj.JOB_ACTIVE],
            ).fetchall()
            active = [r["job_id"] for r in rows]
            if active:
                # the job first, so the messages about its files name it CANCELED (a multihop
                # job's own rules would call a canceled hop FAILED)
                amarks = ",".join("?" * len(active))
                conn.execute(
                    f"UPDATE t_job SET job_state = 'CANCELED', reason = ?, job_finished = ?, cancel_job = 'Y'"
                    f" WHERE job_id IN ({amarks})",
                    [reason, now, *active],
                )
            # every unfinished file, a multihop job's held hops (NOT_USED) included
            interrupted = self._cancel_files_of(conn, active, None, reason, now)
            for r in rows:
                if r["job_type"] == "H":
                    queue_cleanup(conn, r["job_id"], now + self.cleanup_delay)
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

    def _cancel_files_of(self, conn, job_ids: list[str], file_ids: list[int] | None, reason: str, now: float) -> list[int]:
        if not job_ids or file_ids == []:
            return []
        jmarks = ",".join("?" * len(job_ids))
        scope, args = f"job_id IN ({jmarks})", list(job_ids)
        if file_ids is not None:
            scope += f" AND file_id IN ({','.join('?' * len(file_ids))})"
            args += list(file_ids)
        ending = conn.execute(
            f"SELECT file_id, file_state FROM t_file WHERE {scope} AND file_state NOT IN ('FINISHED', 'FAILED', 'CANCELED')",
            args,
        ).fetchall()
        conn.execute(
            f"UPDATE t_file SET file_state = 'CANCELED', reason = ?, finish_time = ?"
            f" WHERE {scope} AND file_state NOT IN ('FINISHED', 'FAILED', 'CANCELED')",
            [reason, now, *args],
        )
        if ending and self.messages is not None:
            for job_id in job_ids:
                refresh_job(conn, job_id, now, None)  # the messages name the job's state after the change
            self._queue(conn, [(r[0], "CANCELED", False) for r in ending], now)
        return [r[0] for r in ending if r[1] in ("READY", "ACTIVE")]

    def set_priority(self, job_ids: Sequence[str], priority: int) -> tuple[dict[str, dict], set[str]]:
        """Change the priority of the jobs that are not finished (FTS3 leaves a terminal job as
        it is). Returns the jobs as they are afterwards and the ids that were changed."""
        if not job_ids:
            return {}, set()
        active = ",".join("?" * len(fj.JOB_ACTIVE))
        with self._tx() as conn:
            # read and write in one transaction: a job finishing meanwhile is not changed
            changed = {r[0] for r in conn.execute(
                f"SELECT job_id FROM t_job WHERE job_id IN ({','.join('?' * len(job_ids))}) AND job_state IN ({active})",
                [*job_ids, *fj.JOB_ACTIVE],
            )}
            conn.executemany("UPDATE t_job SET priority = ? WHERE job_id = ?", [(priority, j) for j in changed])
            conn.executemany("UPDATE t_file SET priority = ? WHERE job_id = ?", [(priority, j) for j in changed])
        return self.jobs(job_ids), changed
