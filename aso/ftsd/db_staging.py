"""The tape side of the job store: recalls, pins, and the files waiting for them.

A mixin of :class:`aso.ftsd.db.JobStore`. ``t_tape`` holds one row per tape file a
bring-online asked for: RECALLING until ``ready_at``, then ONLINE until ``pinned_until``
has passed and no queued or running copy needs it, when the row goes (nearline again). No
row: nearline. Every sweep is one transaction of a few statements, whatever the number of
files (aso.ftsd.staging.Robot runs it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from aso.ftsd import staging as st
from aso.ftsd.db_rows import _now, refresh_job

TAPE_SCHEMA = """
CREATE TABLE IF NOT EXISTS t_tape (
    path         TEXT PRIMARY KEY,
    -- RECALLING (the robot is on it) or ONLINE (on the disk buffer, readable)
    state        TEXT NOT NULL,
    requested    REAL NOT NULL,
    -- when the recall ends (RECALLING) or ended (ONLINE)
    ready_at     REAL NOT NULL,
    -- the longest copy_pin_lifetime asked for by the requests this recall serves
    pin_seconds  REAL NOT NULL DEFAULT 0,
    -- ONLINE: evicted after this, once no queued or running copy reads it
    pinned_until REAL
);
CREATE INDEX IF NOT EXISTS ix_tape_state ON t_tape (state, ready_at);
"""

#: states of a staged file that will still read its source (its recall must stay online)
_READING = ("SUBMITTED", "READY", "ACTIVE")
#: staging files past their bring-online deadline whose recall did not end before it
_LATE = (
    "SELECT f.file_id FROM t_file f JOIN t_job j USING (job_id) LEFT JOIN t_tape t ON t.path = f.tape_path"
    " WHERE f.file_state = 'STAGING' AND f.tape_path IS NOT NULL AND j.bring_online > 0"
    " AND f.staging_start + j.bring_online <= ? AND (t.path IS NULL OR t.ready_at > f.staging_start + j.bring_online)"
)
#: a staging file needs no recall (not on tape), or its file is online
_READY_WHERE = "tape_path IS NULL OR tape_path IN (SELECT path FROM t_tape WHERE state = 'ONLINE')"
_READY = f"SELECT file_id FROM t_file WHERE file_state = 'STAGING' AND ({_READY_WHERE})"
#: an online file whose pin expired and that no staging, queued or running copy needs
_EVICTABLE_WHERE = (
    f"state = 'ONLINE' AND pinned_until <= ? AND NOT EXISTS (SELECT 1 FROM t_file f"
    f" WHERE f.tape_path = t_tape.path AND (f.file_state = 'STAGING'"
    f" OR (f.file_state IN ({','.join('?' * len(_READING))}) AND f.staging_finished IS NOT NULL)))"
)
_EVICTABLE = f"SELECT path FROM t_tape WHERE {_EVICTABLE_WHERE}"


def _chunks(items: list, size: int = 900) -> Iterable[list]:
    """Pieces small enough for SQLite's bound-parameter limit."""
    for i in range(0, len(items), size):
        yield items[i:i + size]


class StagingQueries:
    #: set by the service from [fts_server] tape_roots and staging_delay_*
    tape: st.TapeSettings = st.TapeSettings()
    #: the highest file id a sweep has looked at: files submitted since are the only ones
    #: that may be staged without a recall ending (0 after a start: all are looked at once)
    _staging_mark: int = 0

    def _request_recalls(self, conn, paths: Iterable[str], pin_seconds: float, now: float) -> None:
        """Bring-online requests for these tape files (inside the submission's transaction):
        a nearline file starts recalling; one recalling or online already is shared (its pin
        is extended to cover this request)."""
        t = self.tape
        conn.executemany(
            "INSERT INTO t_tape (path, state, requested, ready_at, pin_seconds) VALUES (?, 'RECALLING', ?, ?, ?)"
            " ON CONFLICT (path) DO UPDATE SET pin_seconds = MAX(pin_seconds, excluded.pin_seconds),"
            " pinned_until = CASE WHEN state = 'ONLINE' THEN MAX(pinned_until, excluded.requested + excluded.pin_seconds)"
            " ELSE pinned_until END",
            [(p, now, now + st.recall_delay(p, t.delay_min, t.delay_max), pin_seconds) for p in set(paths)],
        )

    def nearline(self, paths: Sequence[str]) -> set[str]:
        """Which of these tape files are not online now (one read for all of them)."""
        paths = list(set(paths))
        online: set[str] = set()
        for part in _chunks(paths):
            online.update(r[0] for r in self._read(
                f"SELECT path FROM t_tape WHERE state = 'ONLINE' AND path IN ({','.join('?' * len(part))})", part))
        return set(paths) - online

    def tape_state(self, path: str) -> tuple[str, float, float | None] | None:
        """(state, ready_at, pinned_until) of a tape file's row; None: nearline (for tests and the log)."""
        rows = self._read("SELECT state, ready_at, pinned_until FROM t_tape WHERE path = ?", (path,))
        return tuple(rows[0]) if rows else None

    def staging_sweep(self, now: float | None = None, full: bool = True) -> st.Sweep:
        """One pass of the robot, in one transaction (the messages of its changes queued in
        it): recalls that ended and the files waiting for them, and the files submitted since
        the last pass that need no recall (disk files, files online already). A ``full``
        pass (the robot makes one every poll) also fails the files past their bring-online
        deadline, stages any staging file that is ready, and evicts expired pins; it finds
        them first with reads, which hold up no writer, and the transaction then changes
        only those, each guarded again (a file canceled meanwhile is left as it is)."""
        now = _now() if now is None else now
        events: list = []
        failed: list = []
        evicted = 0
        late = ready = evictable = []
        if full:
            late = [r[0] for r in self._read(_LATE, (now,))]
            ready = [r[0] for r in self._read(_READY)]
            evictable = [r[0] for r in self._read(_EVICTABLE, (now, *_READING))]
        with self._tx() as conn:
            # timeouts first: a file whose recall ends after its deadline never got it in time
            for part in _chunks(late):
                failed += conn.execute(
                    f"UPDATE t_file NOT INDEXED SET file_state = 'FAILED', reason = ?, recoverable = 1, finish_time = ?"
                    f" WHERE file_id IN ({','.join('?' * len(part))}) AND file_state = 'STAGING'"
                    f" RETURNING file_id, job_id",
                    (st.BRING_ONLINE_TIMEOUT_REASON, now, *part),
                ).fetchall()
            online = [r[0] for r in conn.execute(
                "UPDATE t_tape SET state = 'ONLINE', pinned_until = ready_at + pin_seconds"
                " WHERE state = 'RECALLING' AND ready_at <= ? RETURNING path", (now,))]
            # staged: disk files at once, tape files once online; a staging-only file (source
            # and destination the same URL) is done then, the others wait for a copy slot
            staged: list = []
            for part in _chunks(online):
                staged += self._stage(conn, f"tape_path IN ({','.join('?' * len(part))})", part, now,
                                      "INDEXED BY ix_file_tape")
            top = conn.execute("SELECT MAX(file_id) FROM t_file").fetchone()[0] or 0
            if top > self._staging_mark:  # (a range of the primary key, not the staging files)
                staged += self._stage(conn, f"file_id > ? AND ({_READY_WHERE})", [self._staging_mark], now,
                                      "NOT INDEXED")
            for part in _chunks(ready):
                staged += self._stage(conn, f"file_id IN ({','.join('?' * len(part))}) AND ({_READY_WHERE})", part,
                                      now, "NOT INDEXED")
            for part in _chunks(evictable):
                evicted += conn.execute(
                    f"DELETE FROM t_tape WHERE path IN ({','.join('?' * len(part))}) AND {_EVICTABLE_WHERE}",
                    (*part, now, *_READING),
                ).rowcount
            events += [(r[0], "FAILED", False) for r in failed]
            events += [(r[0], "FINISHED" if r[2] == "FINISHED" else None, False) for r in staged]
            self._staged_jobs(conn, failed, staged, now, events)
            self._queue(conn, events, now)
            next_ready = conn.execute("SELECT MIN(ready_at) FROM t_tape WHERE state = 'RECALLING'").fetchone()[0]
        self._staging_mark = top  # (committed)
        return st.Sweep(staged=len(staged), timed_out=len(failed), evicted=evicted, next_ready=next_ready)

    @staticmethod
    def _stage(conn, where: str, args: list, now: float, index: str = "") -> list:
        """Stage the STAGING files ``where`` says (``index``: how to find them; without
        statistics SQLite would walk every staging file)."""
        return conn.execute(
            f"UPDATE t_file {index} SET"
            " staging_finished = MAX(staging_start, COALESCE((SELECT ready_at FROM t_tape t"
            "   WHERE t.path = t_file.tape_path), staging_start)),"
            " finish_time = CASE WHEN source_surl = dest_surl THEN ? END,"
            " start_time = CASE WHEN source_surl = dest_surl THEN staging_start END,"
            " tx_duration = CASE WHEN source_surl = dest_surl THEN 0 END,"
            " filesize = CASE WHEN source_surl = dest_surl THEN user_filesize ELSE filesize END,"
            " file_state = CASE WHEN source_surl = dest_surl THEN 'FINISHED' ELSE 'SUBMITTED' END"
            f" WHERE file_state = 'STAGING' AND ({where})"
            " RETURNING file_id, job_id, file_state",
            [now, *args],
        ).fetchall()

    def _staged_jobs(self, conn, failed: list, staged: list, now: float, events: list) -> None:
        """The jobs of the files that left STAGING: those with a file that ended (failed, or
        finished staging only) are re-derived from their files; the others only leave
        STAGING once none of their files stages (one statement for all of them)."""
        ended = {r[1] for r in failed} | {r[1] for r in staged if r[2] == "FINISHED"}
        if ended:
            hops = {r[0]: r[1] for r in conn.execute(
                f"SELECT job_id, hop_count FROM t_job WHERE job_id IN ({','.join('?' * len(ended))})", list(ended))}
            for r in failed:
                if hops.get(r[1]) is not None:  # a multihop job's later hops will never run
                    self._next_hop(conn, r[1], 0, "FAILED", now, events)
            for job_id in ended:
                refresh_job(conn, job_id, now, hops.get(job_id) is not None, self.cleanup_delay)
        waiting = list({r[1] for r in staged} - ended)
        for part in _chunks(waiting):
            conn.execute(
                f"UPDATE t_job SET job_state = 'SUBMITTED' WHERE job_id IN ({','.join('?' * len(part))})"
                # (through the job's files: SQLite would otherwise walk every staging file per job)
                f" AND job_state = 'STAGING' AND NOT EXISTS (SELECT 1 FROM t_file f INDEXED BY ix_file_job"
                f"  WHERE f.job_id = t_job.job_id AND f.file_state = 'STAGING')",
                part,
            )

    def staging_counts(self) -> dict[str, dict[str, int]]:
        """GET /status/hosts: files copying (READY, ACTIVE) and staging per host."""
        out: dict[str, dict[str, int]] = {}
        for host, state, n in self._read(
                "SELECT COALESCE(transfer_host, ''), file_state, COUNT(*) FROM t_file"
                " WHERE file_state IN ('READY', 'ACTIVE') GROUP BY 1, 2"
                " UNION ALL SELECT COALESCE(staging_host, ''), file_state, COUNT(*) FROM t_file"
                " WHERE file_state = 'STAGING' GROUP BY 1, 2"):
            counts = out.setdefault(host or self.host, {"active": 0, "staging": 0})
            counts["staging" if state == "STAGING" else "active"] += n
        return out
