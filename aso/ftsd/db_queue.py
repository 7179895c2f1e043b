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
from aso.messaging.fts3 import UNUSED_HOP_REASON

#: file states of a file that may still read or write its URLs
_UNFINISHED = ("SUBMITTED", "READY", "ACTIVE", "NOT_USED", "STAGING", "ON_HOLD")
#: seconds before a scratch copy in use, or whose deletion failed, is looked at again
CLEANUP_BUSY_DELAY = 60.0
#: deletions tried before a scratch copy is given up on (and left where it is)
CLEANUP_ATTEMPTS = 5


def _task(r, nearline: set[str] = frozenset()) -> CopyTask:
    internal = json.loads(r["internal_job_params"] or "{}")
    overwrite = r["overwrite_flag"] == "Y"
    reusable = False
    if r["hop_count"] is not None and r["file_index"] < r["hop_count"] - 1:
        # an intermediate hop of a multihop job: its destination is a scratch copy
        overwrite = overwrite or bool(internal.get("overwrite_hop"))
        reusable = ":" in r["checksum"]  # a complete copy can be verified against the user's value
    return CopyTask(r["file_id"], r["job_id"], r["source_surl"], r["dest_surl"], r["checksum"], r["user_filesize"],
                    overwrite, r["verify_checksum"], internal, r["transferred"], bool(r["committing"]), r["retry"],
                    reusable, r["tape_path"] is not None and r["tape_path"] in nearline)


class ExecutorQueries:
    # -- multihop scratch copies ---------------------------------------------------------

    def due_cleanup(self, now: float | None = None, limit: int = 100) -> list[tuple[int, str]]:
        """Scratch copies whose time has come and that no unfinished file uses (as a source
        or a destination: a retry, or a resubmitted job reusing it, may need it). Those in
        use are put off (checked again a minute later, not before)."""
        now = _now() if now is None else now
        with self._tx() as conn:
            due = conn.execute(
                "SELECT cleanup_id, url FROM t_cleanup WHERE not_before <= ? ORDER BY not_before LIMIT ?", (now, limit),
            ).fetchall()
            if not due:
                return []
            urls = list({r["url"] for r in due})
            marks = ",".join("?" * len(urls))
            # read through the state index: only unfinished files are looked at
            busy = set()
            for r in conn.execute(
                f"SELECT source_surl, dest_surl FROM t_file WHERE file_state IN ({','.join('?' * len(_UNFINISHED))})"
                f" AND (source_surl IN ({marks}) OR dest_surl IN ({marks}))",
                [*_UNFINISHED, *urls, *urls],
            ):
                busy.update((r[0], r[1]))
            later = [r["cleanup_id"] for r in due if r["url"] in busy]
            if later:
                conn.execute(
                    f"UPDATE t_cleanup SET not_before = ? WHERE cleanup_id IN ({','.join('?' * len(later))})",
                    [now + CLEANUP_BUSY_DELAY, *later],
                )
        return [(r["cleanup_id"], r["url"]) for r in due if r["url"] not in busy]

    def cleanup_done(self, cleanup_ids: Sequence[int]) -> None:
        if cleanup_ids:
            with self._tx() as conn:
                conn.execute(f"DELETE FROM t_cleanup WHERE cleanup_id IN ({','.join('?' * len(cleanup_ids))})",
                             list(cleanup_ids))

    def cleanup_failed(self, cleanup_id: int, now: float | None = None) -> bool:
        """A deletion failed: try again later, a few times. Returns whether it will be tried again."""
        now = _now() if now is None else now
        with self._tx() as conn:
            row = conn.execute("UPDATE t_cleanup SET attempts = attempts + 1, not_before = ? + ? * (attempts + 1)"
                               " WHERE cleanup_id = ? RETURNING attempts", (now, CLEANUP_BUSY_DELAY, cleanup_id)).fetchone()
            if row is not None and row[0] >= CLEANUP_ATTEMPTS:
                conn.execute("DELETE FROM t_cleanup WHERE cleanup_id = ?", (cleanup_id,))
                return False
        return row is not None

    def cleanup_pending(self) -> list[tuple[str, float]]:
        """(url, not_before) of every scratch copy still to delete (for the tests and the log)."""
        return [(r[0], r[1]) for r in self._read("SELECT url, not_before FROM t_cleanup ORDER BY cleanup_id")]

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
                f" j.verify_checksum, j.internal_job_params, f.transferred, f.committing, f.retry, f.file_index,"
                f" j.hop_count, f.tape_path"
                f" FROM t_file f JOIN t_job j USING (job_id) WHERE f.file_id IN ({cmarks})",
                claimed,
            ).fetchall()
            jobs = {r["job_id"] for r in rows}
            # sources on tape that are not online (their copies fail): one read for the round
            tapes = list({r["tape_path"] for r in rows if r["tape_path"] is not None})
            nearline = set(tapes) - {t[0] for t in conn.execute(
                f"SELECT path FROM t_tape WHERE state = 'ONLINE' AND path IN ({','.join('?' * len(tapes))})", tapes)
            } if tapes else set()
            conn.execute(
                f"UPDATE t_job SET job_state = 'ACTIVE' WHERE job_id IN ({','.join('?' * len(jobs))})"
                f" AND job_state IN ('SUBMITTED', 'STAGING')",
                list(jobs),
            )
            self._queue(conn, [(f, None, False) for f in claimed], now)
        return [_task(r, nearline) for r in rows]

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
        reused: bool = False,
    ) -> Finished | None:
        """``events``: where to leave this change's messages for the caller to queue with
        others (None: queued here)."""
        now = _now() if now is None else now
        row = conn.execute(
            "SELECT f.job_id, f.retry, f.start_time, f.transfer_host, j.retry AS job_retry, j.retry_delay,"
            " f.file_index, j.hop_count"
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
            job_state = refresh_job(conn, row["job_id"], now, row["hop_count"] is not None)
            self._message(conn, events, (file_id, "FAILED", True), now)
            return Finished("SUBMITTED", job_state, True)
        throughput = (filesize / duration / 1e6) if (state == "FINISHED" and filesize and duration) else None
        foreign = False
        if reused and state == "FINISHED":
            # A scratch copy an earlier job of this service left (its removal pending) becomes
            # this job's to remove when it ends; anything else found there is not ours at all.
            taken = conn.execute(
                "DELETE FROM t_cleanup WHERE url = (SELECT dest_surl FROM t_file WHERE file_id = ?) RETURNING cleanup_id",
                (file_id,)).fetchall()
            foreign = not taken
        conn.execute(
            "UPDATE t_file SET file_state = ?, reason = ?, recoverable = ?, finish_time = ?, tx_duration = ?,"
            " throughput = ?, filesize = COALESCE(?, filesize), checksum = COALESCE(?, checksum),"
            " transferred = CASE WHEN ? = 'FINISHED' THEN transferred ELSE 0 END, committing = 0, reused = ?"
            " WHERE file_id = ?",
            (state, reason, int(recoverable), now, duration, throughput, filesize, checksum, state, int(foreign),
             file_id),
        )
        multihop = row["hop_count"] is not None
        self._message(conn, events, (file_id, state, False), now)
        promoted = False
        if multihop:
            promoted = self._next_hop(conn, row["job_id"], row["file_index"], state, now, events)
        job_state = refresh_job(conn, row["job_id"], now, multihop, self.cleanup_delay)
        return Finished(state, job_state, False, promoted)

    def _next_hop(self, conn, job_id: str, index: int, state: str, now: float, events: list | None) -> bool:
        """A hop of a multihop job ended for good: a finished hop lets the next one go
        (NOT_USED -> SUBMITTED); a failed one fails every later hop, which will never run.
        Returns whether a hop was let go."""
        if state == "FINISHED":
            rows = conn.execute(
                "UPDATE t_file SET file_state = 'SUBMITTED', retry_timestamp = NULL"
                " WHERE job_id = ? AND file_index = ? AND file_state = 'NOT_USED' RETURNING file_id",
                (job_id, index + 1),
            ).fetchall()
            for r in rows:
                self._message(conn, events, (r[0], None, False), now)
            return bool(rows)
        rows = conn.execute(
            "UPDATE t_file SET file_state = 'FAILED', reason = ?, recoverable = 0, finish_time = ?"
            " WHERE job_id = ? AND file_index > ? AND file_state NOT IN ('FINISHED', 'FAILED', 'CANCELED')"
            " RETURNING file_id",
            (UNUSED_HOP_REASON, now, job_id, index),
        ).fetchall()
        for r in rows:
            self._message(conn, events, (r[0], "FAILED", False), now)
        return False

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
                "SELECT f.file_id, f.job_id, f.file_index, j.hop_count FROM t_file f JOIN t_job j USING (job_id)"
                " WHERE f.file_state = 'SUBMITTED' AND (f.retry_timestamp IS NULL OR f.retry_timestamp <= ?) LIMIT ?",
                (now, limit),
            ).fetchall()
            if not rows:
                return 0
            conn.executemany(
                "UPDATE t_file SET file_state = 'FINISHED', start_time = ?, finish_time = ?, tx_duration = 0,"
                " filesize = user_filesize, transfer_host = ? WHERE file_id = ?",
                [(now, now, self.host, r["file_id"]) for r in rows],
            )
            events = [(r["file_id"], "FINISHED", False) for r in rows]
            for r in rows:
                if r["hop_count"] is not None:  # the next hop's turn (in the next batch)
                    self._next_hop(conn, r["job_id"], r["file_index"], "FINISHED", now, events)
            # no cleanup_delay: nothing was written, so there are no scratch copies to remove
            for job_id, hops in {r["job_id"]: r["hop_count"] for r in rows}.items():
                refresh_job(conn, job_id, now, hops is not None)
            self._queue(conn, events, now)
        return len(rows)
