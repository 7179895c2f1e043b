"""The executor's side of the job store: expiry, the queue, claims, progress, results.

A mixin of :class:`aso.ftsd.db.JobStore` (it uses the store's ``_tx`` and ``_read``):
changes made by a worker carry a guard (the file must still be READY or ACTIVE), so a file
canceled or expired while it was being copied keeps the state the user gave it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from aso.ftsd import jobs as fj
from aso.ftsd.db_rows import (
    QUEUE_TIMEOUT_REASON,
    CopyTask,
    Finished,
    QueuedFile,
    _now,
    refresh_job,
)


class ExecutorQueries:
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
        # walks ix_file_ready in order and stops at the limit: file ids grow with submission,
        # so (priority, file id) is FTS3's (priority, submission time) order
        rows = self._read(
            "SELECT f.file_id, f.job_id, f.source_se, f.dest_se, f.priority, j.submit_time, f.file_index"
            " FROM t_file f INDEXED BY ix_file_ready JOIN t_job j USING (job_id)"
            " WHERE f.file_state = 'SUBMITTED' AND (f.retry_timestamp IS NULL OR f.retry_timestamp <= ?)"
            " ORDER BY f.priority DESC, f.file_id LIMIT ?",
            (now, limit),
        )
        return [QueuedFile(*tuple(r)) for r in rows]

    def claim(self, file_ids: Sequence[int], host: str | None = None, now: float | None = None) -> list[CopyTask]:
        """SUBMITTED → ACTIVE for the chosen files (those still SUBMITTED), in one transaction
        for the whole round (a copy slot is ready for each: FTS3's READY lasts no time here);
        their jobs go ACTIVE."""
        if not file_ids:
            return []
        now = _now() if now is None else now
        marks = ",".join("?" * len(file_ids))
        with self._tx() as conn:
            rows = conn.execute(
                f"UPDATE t_file SET file_state = 'ACTIVE', transfer_host = ?, start_time = ?, reason = NULL"
                f" WHERE file_id IN ({marks}) AND file_state = 'SUBMITTED' RETURNING file_id",
                [host or self.host, now, *file_ids],
            ).fetchall()
            claimed = [r[0] for r in rows]
            if not claimed:
                return []
            cmarks = ",".join("?" * len(claimed))
            rows = conn.execute(
                f"SELECT f.file_id, f.job_id, f.source_surl, f.dest_surl, f.checksum, f.user_filesize, j.overwrite_flag,"
                f" j.verify_checksum, j.internal_job_params, f.transferred, f.committing, f.retry"
                f" FROM t_file f JOIN t_job j USING (job_id) WHERE f.file_id IN ({cmarks})",
                claimed,
            ).fetchall()
            jobs = {r["job_id"] for r in rows}
            conn.execute(
                f"UPDATE t_job SET job_state = 'ACTIVE' WHERE job_id IN ({','.join('?' * len(jobs))}) AND job_state = 'SUBMITTED'",
                list(jobs),
            )
            self._queue(conn, [(f, None, False) for f in claimed], now)
        return [
            CopyTask(r["file_id"], r["job_id"], r["source_surl"], r["dest_surl"], r["checksum"], r["user_filesize"],
                     r["overwrite_flag"] == "Y", r["verify_checksum"], json.loads(r["internal_job_params"] or "{}"),
                     r["transferred"], bool(r["committing"]), r["retry"])
            for r in rows
        ]

    def checkpoint(self, file_id: int, transferred: int, committing: bool = False) -> None:
        with self._tx() as conn:
            self._checkpoint_in(conn, file_id, transferred, committing)

    @staticmethod
    def _checkpoint_in(conn, file_id: int, transferred: int, committing: bool = False) -> None:
        conn.execute(
            "UPDATE t_file SET transferred = ?, committing = ? WHERE file_id = ? AND file_state IN ('READY', 'ACTIVE')",
            (transferred, int(committing), file_id),
        )

    def record(self, ops: Sequence[tuple[str, tuple, dict]]) -> list:
        """Several workers' ``checkpoint`` and ``finish`` calls in one transaction (a group
        commit); their results in order."""
        events: list = []
        with self._tx() as conn:
            results = [
                self._checkpoint_in(conn, *args, **kwargs) if name == "checkpoint"
                else self._finish_in(conn, *args, events=events, **kwargs)
                for name, args, kwargs in ops
            ]
            self._queue(conn, events, _now())  # the batch's messages: one read, one insert
        return results

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

    def finish(self, file_id: int, state: str, **kwargs) -> Finished | None:
        """A copy ended: FINISHED, or FAILED (queued again when recoverable with retries left).
        None when the file is no longer READY/ACTIVE (canceled or expired meanwhile). The
        keywords are :meth:`_finish_in`'s."""
        with self._tx() as conn:
            return self._finish_in(conn, file_id, state, **kwargs)

    def _finish_in(
        self,
        conn,
        file_id: int,
        state: str,
        *,
        reason: str | None = None,
        recoverable: bool = False,
        filesize: int | None = None,
        checksum: str | None = None,
        default_retry: int = 0,
        now: float | None = None,
        events: list | None = None,
    ) -> Finished | None:
        """``events``: where to leave this change's messages for the caller to queue with
        others (None: queued here)."""
        now = _now() if now is None else now
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
            job_state = refresh_job(conn, row["job_id"], now)
            self._message(conn, events, (file_id, "FAILED", True), now)
            return Finished("SUBMITTED", job_state, True)
        throughput = (filesize / duration / 1e6) if (state == "FINISHED" and filesize and duration) else None
        conn.execute(
            "UPDATE t_file SET file_state = ?, reason = ?, recoverable = ?, finish_time = ?, tx_duration = ?,"
            " throughput = ?, filesize = COALESCE(?, filesize), checksum = COALESCE(?, checksum),"
            " transferred = CASE WHEN ? = 'FINISHED' THEN transferred ELSE 0 END, committing = 0"
            " WHERE file_id = ?",
            (state, reason, int(recoverable), now, duration, throughput, filesize, checksum, state, file_id),
        )
        job_state = refresh_job(conn, row["job_id"], now)
        self._message(conn, events, (file_id, state, False), now)
        return Finished(state, job_state, False)

    def _message(self, conn, events: list | None, event, now: float) -> None:
        if events is None:
            self._queue(conn, [event], now)
        else:
            events.append(event)

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
                refresh_job(conn, job_id, now)
            self._queue(conn, [(r["file_id"], "FINISHED", False) for r in rows], now)
        return len(rows)
