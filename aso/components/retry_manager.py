"""``aso retry-manager``: cool-off, kill, recovery.

- RETRY rows older than the cool-off go back to NEW (retry count + 1).
- KILL rows: the ones submitted to FTS have their files canceled there (the whole job when
  every file of it is being killed, else those files); then FTS is asked again, file by
  file: a file FTS had already FINISHED makes its row DONE (the file is there), the others
  are marked KILLED (canceled before copying, failed, or never in FTS). A row whose FTS
  cancel failed stays KILL for the next pass (exit 3 when FTS was unreachable); so does a
  row a pending write-ahead record names (the transfer component's replay records its FTS
  job first).
- Rows stuck in ACQUIRED beyond ``stuck_after`` that no write-ahead record names go back to
  NEW (their submitter died before writing one: nothing was submitted). Rows stuck in
  SUBMITTED that no monitor or reporter entry names get a monitor entry again, so the
  monitor polls their FTS job (CRAB #5891, #6572: such rows used to rot).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field

from aso.components.handoffs import MonitorEntry
from aso.components.pipeline import PipelineSettings, ToolCache, ToolFactory
from aso.components.transfer import LOCKS, SUBMIT_BOXES
from aso.errors import AsoError
from aso.locking import LockHeld, component_lock
from aso.state import StateBackend, TransferUpdate
from aso.transfertools import JobResult, TransferToolError
from aso.transfertools.base import FILE_TERMINAL

log = logging.getLogger("aso.retry_manager")


@dataclass
class RetryManagerSummary:
    retried: int = 0
    killed: int = 0
    #: rows to kill whose copy FTS had finished already: DONE
    done: int = 0
    canceled_jobs: int = 0
    kill_pending: int = 0
    released: int = 0
    repolled: int = 0
    #: FTS endpoints that could not be reached (their kills wait for the next pass)
    unreachable: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def files_handled(self) -> int:
        """Files this pass handled (aso_pass_files): rows retried, killed, found done, released or re-polled."""
        return self.retried + self.killed + self.done + self.released + self.repolled

    def line(self) -> str:
        return (f"retry-manager: {self.retried} back to NEW after the cool-off, {self.killed} killed "
                f"({self.canceled_jobs} FTS job(s) canceled, {self.kill_pending} kill(s) waiting, {self.done} "
                f"already copied: DONE), {self.released} stuck ACQUIRED released, {self.repolled} stuck SUBMITTED "
                f"re-polled" + (f"; FTS unreachable: {', '.join(self.unreachable)}" if self.unreachable else ""))


class RetryManagerPass:
    def __init__(self, backend: StateBackend, proxies, tools: ToolFactory, settings: PipelineSettings):
        self.backend = backend
        self.proxies = proxies
        self.tools = ToolCache(tools)
        self.settings = settings

    def _pending_submissions(self) -> set[str]:
        """Rows the write-ahead records of aso transfer and aso stager name."""
        return set().union(*(self._named_in(box) for box in SUBMIT_BOXES.values()))

    def _named_in(self, kind: str) -> set[str]:
        box = self.settings.sandbox(kind)
        ids: set[str] = set()
        for entry in box.entries():
            record = box.load_record(entry)  # None when unreadable or of the wrong shape (quarantined)
            if record is not None:
                ids.update(record.ids())
        return ids

    def _mine_to_kill(self, rows: list[dict]) -> list[dict]:
        """The rows to kill that are this worker's to cancel, so two hosts never both cancel
        the same files: its own, and nobody's of the users in its share. Alone (no
        heartbeat data), every row, as a single host always did."""
        if self.backend.membership is None and not self.backend.heartbeat_failed:
            return rows
        me = self.backend.worker
        free_users = sorted({r["tm_username"] for r in rows if r.get("tm_aso_worker") is None})
        own, _ = self.backend.share(free_users)
        share = set(own)
        return [r for r in rows if r.get("tm_aso_worker") == me
                or (r.get("tm_aso_worker") is None and r["tm_username"] in share)]

    def kill(self, summary: RetryManagerSummary) -> None:
        rows = self._mine_to_kill(self.backend.transfers_to_kill())
        if not rows:
            return
        # A row a write-ahead record names may be on its way to FTS (a pass killed mid-
        # submission, or FTS unreachable when it tried), whatever FTS job an earlier attempt
        # left in tm_fts_id: the transfer component's replay leaves it out, records the job
        # its chunk went to (the row stays KILL) and cancels it there; this waits for that.
        pending = self._pending_submissions()
        by_job: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
        killed: list[str] = []
        waiting = 0
        for row in rows:
            if row["tm_id"] in pending:
                waiting += 1
            elif row.get("tm_fts_id") and row.get("tm_fts_instance"):
                by_job[(row["tm_username"], row["tm_fts_instance"], row["tm_fts_id"])].append(row)
            else:
                killed.append(row["tm_id"])  # never submitted
        if waiting:
            summary.kill_pending += waiting
            log.info("%d row(s) to kill are named in a pending submission; killed once its FTS job is known", waiting)
        done: list[dict] = []  # rows whose copy FTS finished before the kill reached it
        by_user: dict[tuple[str, str], dict[str, list[dict]]] = defaultdict(dict)
        for (user, endpoint, job_id), job_rows in by_job.items():
            by_user[(user, endpoint)][job_id] = job_rows
        for (user, endpoint), jobs in by_user.items():
            try:
                proxy = str(self.proxies.get_proxy(user))
                tool = self.tools.delegated(endpoint, user, proxy, self.settings)
                statuses = tool.bulk_query(list(jobs))  # one status request for all the user's jobs there
                canceled = []
                for job_id, job_rows in jobs.items():
                    if self._cancel(tool, statuses.get(job_id), {r["tm_id"] for r in job_rows}, summary,
                                    lambda job_id=job_id, user=user: self._awaited(user, job_id)):
                        canceled.append(job_id)
                        log.info("user %s: FTS job %s: %d killed file(s) canceled in FTS", user, job_id, len(job_rows),
                                 extra={"user": user, "fts_job": job_id})
                if canceled:  # what FTS says now: a file may have finished before the cancel landed
                    statuses.update(tool.bulk_query(canceled))
            except TransferToolError as exc:
                self._unreachable(summary, user, endpoint, jobs, exc, transient=exc.transient)
                continue
            except AsoError as exc:  # no usable proxy
                self._unreachable(summary, user, endpoint, jobs, exc, transient=False)
                continue
            finally:
                self.tools.release(user, endpoint)
            for job_id, job_rows in jobs.items():
                files = _files_by_row(statuses.get(job_id))
                status = statuses.get(job_id)
                opaque = status is not None and status.state != "LOST" and not status.terminal and not status.files
                for row in job_rows:
                    state = files.get(row["tm_id"], _unlisted_state(status))
                    if state == "FINISHED":
                        done.append(row)
                    elif state is None and opaque:
                        # the tool lists no files of a running job (Globus, whose task cannot
                        # lose one file): the row's copy may still happen, so it waits for the end
                        summary.kill_pending += 1
                    elif state is None or state in FILE_TERMINAL:
                        killed.append(row["tm_id"])  # never copied: canceled, failed, or not in FTS
                    else:
                        summary.kill_pending += 1  # FTS has not stopped it yet: next pass
        if done:
            outcome = self.backend.update_transfers([
                TransferUpdate(id=r["tm_id"], state="DONE", reason="finished in FTS before the kill reached it",
                               expect_state="KILL", expect_fts_id=r["tm_fts_id"]) for r in done])
            summary.done += len(outcome.updated)
            log.warning("%d row(s) to kill had already been copied by FTS: DONE, not KILLED", len(outcome.updated))
        if killed:
            summary.killed = self.backend.mark_killed(killed, reason="killed by request")

    @staticmethod
    def _unreachable(summary: RetryManagerSummary, user: str, endpoint: str, jobs: dict, exc: Exception,
                     transient: bool) -> None:
        summary.kill_pending += sum(len(r) for r in jobs.values())
        if transient and endpoint not in summary.unreachable:
            summary.unreachable.append(endpoint)
        summary.errors.append(f"{user}: cannot cancel {len(jobs)} FTS job(s) at {endpoint} yet: {exc}")
        log.warning("%s", summary.errors[-1], extra={"user": user})

    def _awaited(self, user: str, job_id: str) -> set[str] | None:
        """The rows of a job the monitor still waits for (from its monitor entry; None when
        it has none)."""
        box = self.settings.sandbox("monitor")
        job = box.load_record(box.entry(user, job_id)) if box.exists(user, job_id) else None
        return None if job is None else set(job.unreported())

    @staticmethod
    def _cancel(tool, status: JobResult | None, wanted: set[str], summary: RetryManagerSummary,
                awaited: Callable[[], set[str] | None] | None = None) -> bool:
        """Cancel the wanted files that FTS has not finished yet (the whole job when they are
        all it has left to do, or when it is a multihop job: one row, which FTS3 cancels
        only whole). A tool that lists no files of an unfinished job (Globus, until its task
        ends) has it canceled whole when every row the monitor still waits for in it is
        being killed (``awaited``), else left to end. True when something was canceled."""
        if status is None or status.terminal:
            return False
        if not status.files and awaited is not None:
            rest = awaited()
            if rest and rest <= wanted:
                tool.cancel(status.job_id)
                summary.canceled_jobs += 1
                return True
            return False
        files = [f for f in status.files if f.transfer_id in wanted and not f.terminal]
        file_ids = [f.file_id for f in files if f.file_id is not None]
        if files and (status.multihop or len(files) == sum(1 for f in status.files if not f.terminal)):
            tool.cancel(status.job_id)
            summary.canceled_jobs += 1
            return True
        if file_ids:  # never an empty list: the tool would cancel the whole job
            tool.cancel(status.job_id, file_ids)
            return True
        return False

    def recover(self, summary: RetryManagerSummary) -> None:
        acquired = self.backend.stuck_transfers(["ACQUIRED"], self.settings.stuck_after)
        if acquired:
            self._release_unrecorded(acquired, summary)
        submitted = self.backend.stuck_transfers(["SUBMITTED"], self.settings.stuck_after)
        if not submitted:
            return
        watched = self._named_in("monitor") | self._named_in("reporter")
        orphans: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
        for row in submitted:
            if row["tm_id"] not in watched and row.get("tm_fts_id") and row.get("tm_fts_instance"):
                orphans[(row["tm_username"], row["tm_fts_instance"], row["tm_fts_id"])].append(row)
        box = self.settings.sandbox("monitor")
        now = int(time.time())
        for (user, endpoint, job_id), rows in orphans.items():
            # the receiver and the monitor change a user's monitor entries under this lock
            with box.user_lock(user):
                job = box.load_record(box.entry(user, job_id)) or MonitorEntry.new(job_id, user, endpoint, now)
                job.watch(r["tm_id"] for r in rows)
                box.write_record(user, job_id, job)
            summary.repolled += len(rows)
            log.info("user %s: FTS job %s: %d SUBMITTED row(s) nobody was watching handed to the monitor", user, job_id,
                     len(rows), extra={"user": user, "fts_job": job_id})
        if summary.repolled:
            log.warning("%d SUBMITTED row(s) nobody was watching are polled again", summary.repolled)

    def _release_unrecorded(self, acquired: list[dict], summary: RetryManagerSummary) -> None:
        """ACQUIRED rows no write-ahead record names go back to NEW. Done while holding the
        transfer component's lock: a transfer pass running now could be writing a record for
        these very rows between our reading the records and releasing them, and the released
        rows would then be submitted twice. The stager's lock too: it acquires and records
        stage-in rows the same way."""
        if self.settings.lock_dir is None:
            return
        try:
            with ExitStack() as locks:
                for name in LOCKS.values():
                    locks.enter_context(component_lock(self.settings.lock_dir, name))
                pending = self._pending_submissions()
                # a row with a submission id may have reached FTS under it: the transfer pass
                # resubmits that sid (FTS answers with the job if it went), never anew
                release = [r["tm_id"] for r in acquired if r["tm_id"] not in pending and not r.get("tm_sid")]
                if release:
                    summary.released = self.backend.release_transfers(release)
        except LockHeld:
            log.info("a transfer or stager pass is running: stuck ACQUIRED rows are looked at next pass")
            return
        if summary.released:
            log.warning("%d row(s) ACQUIRED for more than %d s with no submission record went back to NEW",
                        summary.released, self.settings.stuck_after)

    def run(self) -> RetryManagerSummary:
        summary = RetryManagerSummary()
        try:
            summary.retried = self.backend.retry_transfers(self.settings.cooloff)
            self.kill(summary)
            self.recover(summary)
        finally:
            self.tools.close()
        return summary


def _files_by_row(status: JobResult | None) -> dict[str, str]:
    """Row id → the FTS state of its file in a job (empty when FTS does not know the job)."""
    if status is None or status.state == "LOST":
        return {}
    return {f.transfer_id: f.state for f in status.files if f.transfer_id}


def _unlisted_state(status: JobResult | None) -> str | None:
    """The state of a row a job's result does not list: the tool's ``unlisted`` state once
    the job ended (Globus: FINISHED for a task that succeeded), else unknown (None)."""
    if status is None or status.state == "LOST" or not status.terminal:
        return None
    return status.unlisted


def run_retry_manager(backend: StateBackend, proxies, tools: ToolFactory, settings: PipelineSettings) -> RetryManagerSummary:
    """One ``aso retry-manager`` pass."""
    return RetryManagerPass(backend, proxies, tools, settings).run()
