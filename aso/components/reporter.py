"""``aso reporter``: turn FTS results into transfer states.

One thread per user over the reporter sandbox: FINISHED → DONE; FAILED or CANCELED → RETRY
while the row's retry count is below its maximum and the reason matches none of the
permanent-error patterns, else FAILED. Every update is guarded by the row being SUBMITTED
with the same FTS job id, so a late result for a row that was killed, resolved, or
resubmitted meanwhile is skipped with a log line instead of applied. One bulk update per
user batch (batches of users finishing together share one: a group commit); the entries
are removed only after it succeeded.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from aso.components.pipeline import GroupCommit, PipelineSettings
from aso.errors import AsoError, BackendUnavailable, FencedError
from aso.logs import log_context
from aso.sandbox import SandboxError
from aso.state import StateBackend, TransferUpdate

log = logging.getLogger("aso.reporter")


@dataclass
class ReporterSummary:
    entries: int = 0
    users: int = 0
    states: Counter = field(default_factory=Counter)
    ignored: int = 0
    #: the state backend, when it could not be reached (results stay for the next pass)
    unreachable: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["states"] = dict(self.states)
        return data

    def files_handled(self) -> int:
        """Files this pass handled (aso_pass_files): results recorded as a state."""
        return sum(self.states.values())

    def line(self) -> str:
        states = ", ".join(f"{n} {s}" for s, n in sorted(self.states.items())) or "nothing"
        return (f"reporter: {self.entries} result file(s) of {self.users} user(s): {states} recorded; "
                f"{self.ignored} late result(s) ignored"
                + ("; state backend unreachable, results kept for the next pass" if self.unreachable else ""))


class ReporterPass:
    def __init__(self, backend: StateBackend, settings: PipelineSettings):
        self.backend = backend
        self.settings = settings
        self.box = settings.sandbox("reporter")
        self._group: GroupCommit | None = None
        #: set once the state backend was found unreachable: the other users wait too
        self._down: BackendUnavailable | None = None

    def _update_many(self, batches: list[list[TransferUpdate]]):
        return self.backend.update_transfers([u for batch in batches for u in batch])

    def decide(self, row: dict, state: str, reason: str | None) -> tuple[str, str | None]:
        if state == "FINISHED":
            return "DONE", None
        decision = self.settings.retry.decide(row.get("tm_transfer_retry_count"), row.get("tm_transfer_max_retry_count"),
                                              reason or f"FTS reported {state} without a reason")
        return decision.state, decision.reason

    def run_user(self, user: str) -> tuple[int, Counter, int]:
        if self._down is not None:
            raise self._down  # do not wait out the client's retries once per user
        try:
            with log_context(user=user):  # a pool thread: it does not inherit the caller's context
                return self._run_user(user)
        except BackendUnavailable as exc:
            self._down = exc
            raise

    def _run_user(self, user: str) -> tuple[int, Counter, int]:
        entries, docs = [], []
        for entry in self.box.entries(user):
            doc = self.box.load_record(entry)
            if doc is not None:
                entries.append(entry)
                docs.append(doc)
        if not entries:
            return 0, Counter(), 0
        results = [r for doc in docs for r in doc.results()]
        # Only a failure's outcome depends on the row (its retry counts): a finished file is
        # DONE whatever the row holds, and the guarded update says if there is no such row.
        failed = sorted({f.id for _, f in results if f.state != "FINISHED"})
        rows = {r["tm_id"]: r for r in self.backend.get_transfers(failed)} if failed else {}
        updates, latest = [], {}
        for job_id, f in results:
            latest[(f.id, job_id)] = f  # a result written twice (a replayed hand-over) counts once
        for (row_id, job_id), f in latest.items():
            if f.state == "FINISHED":
                updates.append(TransferUpdate(id=row_id, state="DONE", expect_state="SUBMITTED", expect_fts_id=job_id))
                continue
            row = rows.get(row_id)
            if row is None:
                _unknown_row(user, row_id, job_id)
                continue
            state, reason = self.decide(row, f.state, f.reason)
            updates.append(TransferUpdate(id=row_id, state=state, reason=reason, expect_state="SUBMITTED",
                                          expect_fts_id=job_id))
        if self._group is not None:
            result = self._group.commit(updates)
        else:
            result = self.backend.update_transfers(updates)
        mine = {u.id for u in updates}
        # count what was recorded, not what was asked for (a row killed or resolved meanwhile
        # is skipped by the store)
        applied = set(result.updated)
        states = Counter(u.state for u in updates if u.id in applied)
        self._log_jobs(user, updates, applied)
        ignored = 0
        job_of = {u.id: u.expect_fts_id for u in updates}
        for skip in result.skipped:
            if skip.get("id") not in mine:
                continue  # another user's, in the same group commit
            if skip.get("state") in ("DONE", "FAILED", "RETRY") and skip.get("reason", "").startswith("already"):
                continue
            if skip.get("state") is None:  # no such row (a finished file's, not read before)
                _unknown_row(user, skip.get("id"), job_of.get(skip.get("id")))
                continue
            ignored += 1
            log.info("user %s: late result for row %s of FTS job %s ignored (%s)", user, skip.get("id"),
                     job_of.get(skip.get("id")), skip.get("reason"),
                     extra={"fts_job": job_of.get(skip.get("id")), "rows": skip.get("id")})
        self.box.remove_many(user, [entry.name for entry in entries])
        return len(entries), states, ignored

    @staticmethod
    def _log_jobs(user: str, updates: list[TransferUpdate], applied: set[str]) -> None:
        """One line per FTS job (not per file) with the states its files were given: the
        end of a file's trail through the logs."""
        per_job: dict[str, Counter] = {}
        for u in updates:
            if u.id in applied:
                per_job.setdefault(u.expect_fts_id or "", Counter())[u.state] += 1
        for job_id, states in sorted(per_job.items()):
            log.info("user %s: FTS job %s: %s recorded", user, job_id,
                     ", ".join(f"{n} {s}" for s, n in sorted(states.items())), extra={"fts_job": job_id or None})

    def run(self, progress: Callable[[int, int], None] | None = None) -> ReporterSummary:
        summary = ReporterSummary()
        users = self.box.users()
        if progress:
            progress(0, len(users))
        self._group = GroupCommit(self._update_many, size=len, name="reporter-recorder")
        try:
            self._run_users(users, summary, progress)
        finally:
            self._group.close()
            self._group = None
        return summary

    def _run_users(self, users: list[str], summary: ReporterSummary, progress) -> None:
        with ThreadPoolExecutor(max_workers=max(1, self.settings.reporter_threads)) as pool:
            futures = {u: pool.submit(self.run_user, u) for u in users}
            for done, (user, future) in enumerate(futures.items(), 1):
                try:
                    n, states, ignored = future.result()
                except SandboxError:
                    raise  # the sandbox itself is broken: one clear error, not one per user
                except BackendUnavailable as exc:
                    if not summary.unreachable:
                        summary.unreachable.append("state backend")
                        summary.errors.append(f"state backend unreachable: {exc}; results stay for the next pass")
                        log.error("%s", summary.errors[-1])
                    continue
                except FencedError:
                    raise  # taken over: the whole pass stops
                except AsoError as exc:
                    summary.errors.append(f"{user}: {exc}; their results stay for the next pass")
                    log.error("%s", summary.errors[-1], extra={"user": user})
                    continue
                summary.entries += n
                summary.users += 1 if n else 0
                summary.states.update(states)
                summary.ignored += ignored
                if progress:
                    progress(done, len(users))


def _unknown_row(user: str, row_id: str | None, job_id: str | None) -> None:
    log.warning("user %s: result for unknown row %s (FTS job %s) ignored", user, row_id, job_id,
                extra={"fts_job": job_id, "rows": row_id})


def run_reporter(backend: StateBackend, settings: PipelineSettings,
                 progress: Callable[[int, int], None] | None = None) -> ReporterSummary:
    """One ``aso reporter`` pass."""
    return ReporterPass(backend, settings).run(progress)
