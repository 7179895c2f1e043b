"""``aso monitor``: poll FTS in bulk and hand finished files to the reporter.

For every job in the monitor sandbox (grouped by user and endpoint, one bulk status request
per 100 jobs), each file that reached a terminal state and was not handed over yet goes to
the reporter sandbox at once (a 50-file job does not wait for its slowest file). The monitor
entry records what it handed over, and is removed when the job is terminal and every file
is handed over. A job FTS no longer knows (404), or one past the configured timeouts, has
its remaining files reported FAILED with a reason that says so.

A poll's finished files (one user's jobs at one endpoint) go into one reporter entry, each
file naming its job. Order of writes: reporter entry first, then the monitor entries' record
of it. Killed in between, the next pass writes the same reporter entry again (its name comes
from the jobs' and their hand-over counts), and the reporter applies it idempotently.

With a receiver (``[receiver] brokers``) the monitor is the safety net: it polls only jobs
FTS has said nothing about for ``[monitor] poll_after`` seconds, and it applies a poll's
answer under the user's sandbox lock to the entry as it is then (the receiver may have
handed some files over meanwhile), so the two report each file once.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from aso.components.handoffs import MonitorEntry, ReportedFile, ReporterEntry
from aso.components.pipeline import PipelineSettings, ToolCache, ToolFactory, bounded_map
from aso.errors import AsoError
from aso.logs import log_context
from aso.sandbox import Entry
from aso.transfertools import JobResult, TransferToolError

log = logging.getLogger("aso.monitor")


@dataclass
class MonitorSummary:
    jobs: int = 0
    #: jobs left alone this pass: recent news from the receiver, or polled recently
    quiet_skipped: int = 0
    users: int = 0
    endpoints: int = 0
    finished_jobs: int = 0
    active_jobs: int = 0
    lost_jobs: int = 0
    timed_out_jobs: int = 0
    #: FTS jobs of this worker's SUBMITTED rows that nothing on this disk followed (taken
    #: over from a dead host): monitor entries rebuilt for them
    adopted_jobs: int = 0
    handed_over: Counter = field(default_factory=Counter)
    unreachable: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["handed_over"] = dict(self.handed_over)
        return data

    def files_handled(self) -> int:
        """Files this pass handled (aso_pass_files): finished files handed to the reporter."""
        return sum(self.handed_over.values())

    def merge(self, part: MonitorSummary) -> None:
        """Add what one (user, endpoint) group found: each pool thread counts into its own
        summary, and only the main thread adds them up (``+=`` from threads loses counts)."""
        self.finished_jobs += part.finished_jobs
        self.active_jobs += part.active_jobs
        self.lost_jobs += part.lost_jobs
        self.timed_out_jobs += part.timed_out_jobs
        self.handed_over.update(part.handed_over)
        self.unreachable.extend(part.unreachable)
        self.errors.extend(part.errors)

    def line(self) -> str:
        handed = ", ".join(f"{n} {state}" for state, n in sorted(self.handed_over.items())) or "none"
        text = (f"monitor: polled {self.jobs} FTS job(s) of {self.users} user(s) at {self.endpoints} endpoint(s)"
                + (f" ({self.quiet_skipped} with recent news left to the receiver)" if self.quiet_skipped else "") + ": "
                f"{self.finished_jobs} done, {self.active_jobs} still active, {self.lost_jobs} unknown to FTS, "
                f"{self.timed_out_jobs} timed out; files handed to the reporter: {handed}")
        if self.adopted_jobs:
            text += f"; {self.adopted_jobs} job(s) taken over from another host now followed"
        if self.unreachable:
            text += f"; unreachable: {', '.join(self.unreachable)}"
        return text


def unlisted_outcome(result: JobResult) -> tuple[str, str | None]:
    """What a file a terminal job's result does not list ended as: the state the tool says
    such files are in (Globus: FINISHED for a task that succeeded), else FAILED, as a file
    still active in a terminal job will not move again (CRAB counts it failed), with the
    job's reason when it has one."""
    if result.unlisted == "FINISHED":
        return "FINISHED", None
    why = f"FTS job {result.job_id} ended {result.state} with this file unfinished"
    return result.unlisted or "FAILED", f"{why}: {result.reason}" if result.reason else why


def one_handoff(entries: list[tuple[str, ReporterEntry]]) -> list[tuple[str, ReporterEntry]]:
    """A poll's hand-overs (name, entry), one per job, as one reporter entry holding them
    all: one file to create and fsync for the jobs of a poll instead of one each, and one
    for the reporter to read and remove (a 100,000-file pass wrote 3,000). Its name comes
    from the jobs' own entry names (job id and hand-over count), so a pass killed before
    it recorded the hand-over writes the same entry again, as it did per job."""
    if len(entries) < 2:
        return entries
    names = "\n".join(sorted(name for name, _ in entries))
    first = entries[0][1]
    return [(f"jobs-{hashlib.blake2b(names.encode(), digest_size=16).hexdigest()}",
             ReporterEntry.of_jobs([e for _, e in entries], first.user, first.endpoint))]


@dataclass
class _Writes:
    """The sandbox writes one (user, endpoint) group's poll leads to, made together."""

    reporter: list[tuple[str, ReporterEntry]] = field(default_factory=list)
    #: monitor entries rewritten with files handed over (durable)
    monitor: list[tuple[str, MonitorEntry]] = field(default_factory=list)
    #: monitor entries rewritten with only their news time (not durable)
    quiet: list[tuple[str, MonitorEntry]] = field(default_factory=list)
    #: monitor entries of jobs all handed over
    remove: list[str] = field(default_factory=list)


class MonitorPass:
    def __init__(self, proxies, tools: ToolFactory, settings: PipelineSettings, now: Callable[[], float] = time.time,
                 backend: Any = None):
        self.backend = backend
        self.proxies = proxies
        self.tools = ToolCache(tools)
        self.settings = settings
        self.now = now
        self.monitor_box = settings.sandbox("monitor")
        self.reporter_box = settings.sandbox("reporter")

    def _hand_over(self, entry: Entry, job: MonitorEntry, files: list[ReportedFile], out: _Writes) -> None:
        """Reporter entry first (written by :meth:`_write`), then the monitor entry's record of it."""
        name = f"{job.job_id}_{job.batches}"
        out.reporter.append((name, ReporterEntry(job.job_id, files, entry.user, job.endpoint)))
        job.hand_over((f.id for f in files), int(self.now()))
        job.batches += 1

    def _write(self, user: str, out: _Writes) -> None:
        """A group's sandbox writes, in the order that keeps every file findable: its one
        reporter entry (durable), then the monitor entries' records of it (rewritten or
        removed)."""
        self.reporter_box.write_records(user, one_handoff(out.reporter))
        self.monitor_box.write_records(user, out.monitor)
        for name, job in out.quiet:
            self.monitor_box.write_record(user, name, job, durable=False)
        self.monitor_box.remove_many(user, out.remove)

    def _apply(self, entry: Entry, job: MonitorEntry, result: JobResult, summary: MonitorSummary,
               out: _Writes) -> None:
        reported = set(job.reported)
        now = self.now()
        new: list[ReportedFile] = []
        if result.state == "LOST":
            summary.lost_jobs += 1
            new = [ReportedFile(i, "FAILED", result.reason) for i in job.unreported()]
        else:
            for f in result.files:
                if f.transfer_id in job.files and f.transfer_id not in reported and f.terminal:
                    new.append(ReportedFile(f.transfer_id, f.state, f.reason))
            if result.terminal:
                known = {f.id for f in new} | reported
                new += [ReportedFile(i, state, why) for i in job.files if i not in known
                        for state, why in [unlisted_outcome(result)]]
            else:
                since = job.submitted if job.last_progress is None else job.last_progress
                age, idle = now - job.submitted, now - since
                expired = None
                if age > self.settings.job_timeout:
                    expired = f"abandoned: FTS job {result.job_id} unfinished {int(age)} s after submission (monitor.job_timeout {self.settings.job_timeout} s)"
                elif idle > self.settings.file_timeout and not new and not result.staging:
                    # (a tape recall may take hours without a file finishing: FTS times
                    # it out at bring_online, so only job_timeout bounds a staging job)
                    expired = f"abandoned: no file of FTS job {result.job_id} finished for {int(idle)} s (monitor.file_timeout {self.settings.file_timeout} s)"
                if expired:
                    summary.timed_out_jobs += 1
                    known = {f.id for f in new} | reported
                    new += [ReportedFile(i, "FAILED", expired) for i in job.files if i not in known]
                    log.warning("user %s: %s", entry.user, expired)
        for f in new:
            summary.handed_over[f.state] += 1
        if new:
            self._hand_over(entry, job, new, out)
        if job.complete:
            out.remove.append(entry.name)
            summary.finished_jobs += 1
            log.info("user %s: FTS job %s %s, all %d file(s) handed to the reporter", entry.user, result.job_id,
                     result.state, len(job.files))
        else:
            summary.active_jobs += 1
            if new:
                out.monitor.append((entry.name, job))
                log.info("user %s: FTS job %s %s, %d more file(s) handed to the reporter", entry.user, result.job_id,
                         result.state, len(new))
            elif self.settings.poll_after:
                # polled and unfinished: news too, so the job rests for another poll_after
                # (losing this write to a power cut only polls it again)
                job.last_news = now
                out.quiet.append((entry.name, job))

    def run_group(self, user: str, endpoint: str, entries: list[tuple[Entry, MonitorEntry]]) -> MonitorSummary:
        """Poll one user's jobs at one endpoint; returns what this group found."""
        summary = MonitorSummary()
        try:
            with log_context(user=user):  # a pool thread: it does not inherit the caller's context
                self._run_group(user, endpoint, entries, summary)
            return summary
        finally:
            self.tools.release(user, endpoint)  # a pass over 1000 users must not hold 1000 clients

    def _run_group(self, user: str, endpoint: str, entries: list[tuple[Entry, MonitorEntry]], summary: MonitorSummary) -> None:
        try:
            proxy = str(self.proxies.get_proxy(user))
        except AsoError as exc:
            summary.errors.append(f"{user}: no usable proxy to poll {endpoint} ({exc}); jobs wait for the next pass")
            return
        tool = self.tools.get(endpoint, user, proxy)
        try:
            results = tool.bulk_query([job.job_id for _, job in entries])
        except TransferToolError as exc:
            summary.unreachable.append(endpoint)
            summary.errors.append(f"{user}: status from {endpoint} failed: {exc}")
            return
        with self.monitor_box.user_lock(user):
            out = _Writes()
            for entry, _ in entries:
                # as it is now: the receiver may have handed files over (or all of them)
                job = self.monitor_box.load_record(entry)
                result = results.get(job.job_id) if job is not None else None
                if result is not None:
                    with log_context(fts_job=job.job_id):
                        self._apply(entry, job, result, summary, out)
            self._write(user, out)

    def adopt(self, summary: MonitorSummary) -> None:
        """Follow the FTS jobs of this worker's SUBMITTED (and KILL) rows that no monitor or
        reporter entry on this disk names: jobs a dead host submitted and this worker took
        over. One grouped query a pass; the rows of the missing jobs only are read, and each
        job's entry is written on its own (a kill half-way leaves the rest to the next pass,
        which finds them missing again)."""
        if self.backend is None or self.backend.heartbeat_failed:
            return  # the backend did not take this pass's heartbeat: polling FTS comes first
        try:
            jobs = self.backend.submitted_jobs()
            followed = {e.name for e in self.monitor_box.entries()}
            missing = [(u, j, e) for u, j, e in jobs if j not in followed and e]
            if missing:
                for entry in self.reporter_box.entries():
                    record = self.reporter_box.load_record(entry)
                    if record is not None:
                        followed.update(job for job, _ in record.results())
                missing = [(u, j, e) for u, j, e in missing if j not in followed]
            if not missing:
                return
            rows: dict[str, list[str]] = defaultdict(list)
            for row in self.backend.transfers_of_jobs([j for _, j, _ in missing]):
                rows[row["tm_fts_id"]].append(row["tm_id"])
        except AsoError as exc:  # following the jobs already here matters more
            log.warning("jobs taken over from other hosts not looked for this pass: %s", exc)
            return
        now = int(self.now())
        for user, job_id, endpoint in missing:
            if not rows.get(job_id):
                continue  # finished meanwhile
            # the receiver and the retry manager change a user's entries under this lock too
            with self.monitor_box.user_lock(user):
                job = (self.monitor_box.load_record(self.monitor_box.entry(user, job_id))
                       if self.monitor_box.exists(user, job_id) else None) or MonitorEntry.new(job_id, user, endpoint, now)
                job.watch(i for i in rows[job_id] if i not in job.files)
                self.monitor_box.write_record(user, job_id, job)
            summary.adopted_jobs += 1
            log.info("user %s: FTS job %s (%d file(s)) taken over from another host: followed from now on", user,
                     job_id, len(rows[job_id]), extra={"user": user, "fts_job": job_id})

    def run_user(self, user: str) -> tuple[MonitorSummary, set[str]]:
        """Poll every job of ``user`` due now, one bulk query per endpoint; the endpoints
        polled. Only this user's entries are loaded: a pass over a million files' jobs
        holds a few users' entries at a time, never all of them."""
        summary = MonitorSummary()
        groups: dict[str, list[tuple[Entry, MonitorEntry]]] = defaultdict(list)
        poll_after, now = self.settings.poll_after, self.now()
        for entry in self.monitor_box.entries(user):
            job = self.monitor_box.load_record(entry)
            if job is None:
                continue
            if poll_after and now - job.quiet_since() < poll_after:
                summary.quiet_skipped += 1
                continue
            groups[job.endpoint].append((entry, job))
        summary.jobs = sum(len(v) for v in groups.values())
        summary.users = 1 if groups else 0
        for endpoint, items in sorted(groups.items()):
            summary.merge(self.run_group(user, endpoint, items))
        return summary, set(groups)

    def run(self, progress: Callable[[int, int], None] | None = None) -> MonitorSummary:
        summary = MonitorSummary()
        # before the users are listed: a job taken over gets its entry first
        self.adopt(summary)
        endpoints: set[str] = set()
        users = self.monitor_box.users()
        threads = max(1, self.settings.monitor_threads)
        if progress:
            progress(0, len(users))
        try:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                for done, (part, polled) in enumerate(bounded_map(pool, self.run_user, users, 2 * threads), 1):
                    summary.jobs += part.jobs
                    summary.users += part.users
                    summary.quiet_skipped += part.quiet_skipped
                    summary.merge(part)
                    endpoints |= polled
                    if progress:
                        progress(done, len(users))
        finally:
            self.tools.close()
        summary.endpoints = len(endpoints)
        summary.unreachable = sorted(set(summary.unreachable))
        return summary


def run_monitor(proxies, tools: ToolFactory, settings: PipelineSettings,
                progress: Callable[[int, int], None] | None = None, *, backend: Any = None) -> MonitorSummary:
    """One ``aso monitor`` pass (with ``backend``, also following the jobs this worker took
    over from other hosts)."""
    return MonitorPass(proxies, tools, settings, backend=backend).run(progress)
