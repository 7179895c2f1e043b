"""``aso transfer``: acquire new transfers and submit them to FTS, one job per link chunk.

A pass: finish what a killed pass left half done (write-ahead records), acquire NEW rows
of the active users, then one thread per user: get the user's proxy, group the user's
acquired rows by link (source site, destination site, endpoint), cut each link into chunks
of at most ``max_files_per_job`` with a fresh submission id (sid) each, then:

1. write one write-ahead record (``submit/<user>/<batch>.json``) holding all those chunks;
2. submit each chunk with ``id_generator: deterministic`` and its sid (a resubmission of
   the same chunk answers 409 and gives the same job id: nothing is submitted twice);
3. mark all the user's submitted rows SUBMITTED with their FTS job ids and endpoint in one
   bulk update (guarded by ACQUIRED), and refused chunks RETRY or FAILED;
4. write a monitor entry per FTS job (``monitor/<user>/<job_id>.json``);
5. remove the write-ahead record (or shrink it to the chunks FTS could not be reached for).

Killed anywhere in between, the next pass replays the record from step 2 on. The replay
leaves out rows killed meanwhile (KILL or KILLED): a chunk is submitted again with the same
sid but without them (a chunk with nothing left is not submitted; its job id is known from
the sid). A row killed while its chunk was in flight gets its FTS job id recorded (the store
keeps it KILL), so the retry manager cancels it in FTS, and this pass asks FTS to cancel it
at once too. A refused submission marks the chunk RETRY or FAILED (:mod:`aso.components.retry_policy`); an unreachable
FTS leaves the record and the rows ACQUIRED for the next pass, which resubmits the same sid.
A user without a usable proxy is skipped with a log line; their rows stay ACQUIRED.

Routes come from the topology (:mod:`aso.topology`, chosen once per site pair per pass): a
direct route goes to its link's endpoint; a multi-hop route makes the row a chunk of its
own, one FTS multihop job with a transfer per hop (all carrying the row id), recorded with
the row's path (``tm_path``). A row no path reaches goes RETRY or FAILED (the retry policy)
with a reason starting ``NO_PATH:``.

Tape (:mod:`aso.components.staging`): a chunk whose source is a tape site carries
bring_online and copy_pin_lifetime. ``aso stager`` is this pass over stage-in rows only
(``kind`` 'stagein'): staging-only chunks per site, its own write-ahead records (``stage/``)
and lock; ``aso transfer`` acquires every other row and never a stage-in.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from aso.components.handoffs import Chunk, MonitorEntry, SubmitRecord
from aso.components.pipeline import GroupCommit, PipelineSettings, ToolCache, ToolFactory
from aso.components.staging import STAGEIN_KIND, TRANSFER_KIND, StagingSettings, plan_stageins
from aso.errors import AsoError, ConfigError, FencedError
from aso.logs import log_context
from aso.sandbox import SandboxError
from aso.state import StateBackend, TransferUpdate
from aso.topology import NoPathError, Route, Topology
from aso.topology.throttle import ThrottleLimits
from aso.transfertools import Transfer, TransferToolError
from aso.transfertools.base import HOP_KEY, HOPS_KEY

log = logging.getLogger("aso.transfer")


@dataclass
class TransferSummary:
    acquired: int = 0
    #: NEW rows left waiting because a site or link they need is full (throttling)
    held: int = 0
    users: int = 0
    jobs: int = 0
    files: int = 0
    replayed: int = 0
    retry: int = 0
    failed: int = 0
    #: rows no link or multi-hop path reaches (among retry and failed, reason NO_PATH: ...)
    no_path: int = 0
    #: ACQUIRED rows planned elsewhere (a dead host, an interrupted pass) resubmitted
    #: under their recorded sids
    adopted: int = 0
    users_skipped: list[str] = field(default_factory=list)
    #: FTS endpoints that could not be reached (their chunks wait for the next pass)
    unreachable: list[str] = field(default_factory=list)
    #: configuration errors (a site the rows name is not configured): those rows went
    #: back to NEW untouched, to go once the configuration is fixed
    misconfigured: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: the component whose pass this is (transfer or stager): its summary line says so
    component: str = "transfer"

    def as_dict(self) -> dict:
        doc = asdict(self)
        del doc["component"]  # the command says which; the JSON stays as it was
        return doc

    def files_handled(self) -> int:
        """Files this pass handled (aso_pass_files): submitted to FTS, or sent to RETRY or FAILED."""
        return self.files + self.retry + self.failed

    def add(self, r: _UserResult) -> None:
        """Count what one user's submissions did."""
        self.jobs += r.jobs
        self.files += r.files
        self.retry += r.retry
        self.failed += r.failed
        self.no_path += r.no_path
        self.adopted += r.adopted
        self.errors.extend(r.errors)
        self.unreachable = sorted(set(self.unreachable) | r.unreachable)
        self.misconfigured = sorted(set(self.misconfigured) | r.misconfigured)

    def line(self) -> str:
        skipped = f", {len(self.users_skipped)} user(s) skipped (no proxy)" if self.users_skipped else ""
        return (f"{self.component}: {self.acquired} acquired{f' ({self.held} held back by limits)' if self.held else ''}, {self.files} files submitted in {self.jobs} FTS jobs for "
                f"{self.users} user(s), {self.replayed} interrupted submission(s) completed, {self.retry} to retry, "
                f"{self.failed} failed{skipped}"
                + (f"; {self.no_path} with no path between their sites (NO_PATH)" if self.no_path else "")
                + (f"; {self.adopted} planned elsewhere resubmitted under their sids" if self.adopted else "")
                + (f"; FTS unreachable: {', '.join(self.unreachable)}" if self.unreachable else "")
                + (f"; not configured: {'; '.join(self.misconfigured)}" if self.misconfigured else ""))


@dataclass
class _UserResult:
    jobs: int = 0
    files: int = 0
    retry: int = 0
    failed: int = 0
    no_path: int = 0
    adopted: int = 0
    skipped: bool = False
    unreachable: set[str] = field(default_factory=set)
    misconfigured: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)


def transfers_of(row: dict, route: Route, topology: Topology) -> list[Transfer]:
    """The transfers that move one row along ``route``: one for a direct link, one per hop
    for a multi-hop path (in order, each carrying the row id, its hop's sites, the hop's
    place and the hop count, so the tool folds the hops' results back into one per row)."""
    common = {"id": row["tm_id"], "filesize": row.get("tm_filesize"), "checksum": row.get("tm_checksum") or None}
    task = row["tm_taskname"]
    if not route.is_multihop:
        source, destination = topology.site(row["tm_source"]), topology.site(row["tm_destination"])
        return [Transfer(source=source.pfn(row["tm_source_lfn"]), destination=destination.pfn(row["tm_destination_lfn"]),
                         metadata={"taskname": task, "src_site": row["tm_source"], "dst_site": row["tm_destination"]},
                         **common)]
    urls = topology.hop_urls(route, row["tm_id"], row["tm_source_lfn"], row["tm_destination_lfn"])
    pairs = route.path.pairs()
    return [Transfer(source=src, destination=dst,
                     metadata={"taskname": task, "src_site": a, "dst_site": b, HOP_KEY: k, HOPS_KEY: len(pairs)},
                     **common)
            for k, ((src, dst), (a, b)) in enumerate(zip(urls, pairs, strict=True), 1)]


@dataclass
class Plan:
    """What a user's acquired rows become: chunks to submit, and the rows that cannot go."""

    chunks: list[Chunk] = field(default_factory=list)
    #: rows no link or multi-hop path reaches: (row, the NO_PATH reason)
    no_path: list[tuple[dict, str]] = field(default_factory=list)
    #: rows naming a site this configuration lacks: (row id, what to fix)
    unconfigured: list[tuple[str, str]] = field(default_factory=list)
    #: rows whose LFN cannot become a URL at its site: (row, reason)
    bad: list[tuple[dict, str]] = field(default_factory=list)


def plan_chunks(rows: Iterable[dict], topology: Topology, max_files_per_job: int,
                new_sid: Callable[[], str] = lambda: uuid.uuid4().hex,
                staging: StagingSettings | None = None) -> Plan:
    """Cut rows into chunks, one FTS job each: direct rows grouped per link (source site,
    destination site, endpoint) in chunks of at most ``max_files_per_job``; every multi-hop
    row a chunk of its own (one FTS multihop job per path, as Rucio submits them). The
    route of a site pair is chosen once (the topology caches it for the pass). A chunk
    whose source (a path's first hop's source: a tape site is never intermediate) is a
    tape site carries ``staging``'s bring_online and copy_pin_lifetime."""
    staging = staging or StagingSettings()
    plan = Plan()
    by_link: dict[tuple[str, str, str], list[Transfer]] = defaultdict(list)
    multihop: list[Chunk] = []
    for row in rows:
        try:
            route = topology.route(row["tm_source"], row["tm_destination"])
            transfers = transfers_of(row, route, topology)
        except NoPathError as exc:
            plan.no_path.append((row, str(exc)))
            continue
        except ConfigError as exc:
            plan.unconfigured.append((row["tm_id"], str(exc)))
            continue
        except AsoError as exc:  # an LFN that cannot become a URL at its site
            plan.bad.append((row, str(exc)))
            continue
        if route.is_multihop:
            multihop.append(Chunk(new_sid(), route.endpoint, transfers, route.path.text(),
                                  *staging.for_source(topology.site(route.path.sites[0]))))
        else:
            by_link[(row["tm_source"], row["tm_destination"], route.endpoint)].extend(transfers)
    plan.chunks = [
        Chunk(new_sid(), endpoint, transfers[i:i + max_files_per_job], "",
              *staging.for_source(topology.site(source)))
        for (source, _, endpoint), transfers in sorted(by_link.items())
        for i in range(0, len(transfers), max_files_per_job)
    ] + multihop
    return plan


@dataclass
class _Batch:
    """The outcome of submitting a record's chunks, applied in one go."""

    submitted: list[tuple[Chunk, str]] = field(default_factory=list)  # (chunk, job id)
    refused: list[tuple[Chunk, str]] = field(default_factory=list)  # (chunk, reason)
    kept: list[Chunk] = field(default_factory=list)  # FTS unreachable: submit again next pass


@dataclass
class _Pending:
    user: str
    name: str  # of the write-ahead record
    batch: _Batch
    rows_by_id: dict[str, dict]
    result: _UserResult
    proxy: str = ""
    #: rows left out of this (replayed) submission: killed, or taken over by another worker
    dead: frozenset[str] = frozenset()
    #: the killed ones among them (their FTS job is recorded and canceled if they went)
    killed: frozenset[str] = frozenset()


#: row states a submission must leave out (the user asked for a kill)
_KILLED_STATES = ("KILL", "KILLED")


def _rows(item: _Pending) -> int:
    return sum(len(c.ids()) for c, _ in item.batch.submitted) + sum(len(c.ids()) for c, _ in item.batch.refused)


#: a user's rows one thread holds at a time: 40 FTS jobs of 50 files, a page's cut costing
#: at most one part-filled job per link
PAGE_ROWS = 2_000

#: the write-ahead records of each kind of pass: a transfer pass and a stager pass run at
#: the same time, under their own locks, and each replays only its own records
SUBMIT_BOXES = {TRANSFER_KIND: "submit", STAGEIN_KIND: "stage"}
#: the lock of each kind of pass (the component's name)
LOCKS = {TRANSFER_KIND: "transfer", STAGEIN_KIND: "stager"}


class TransferPass:
    """One pass of ``aso transfer`` (``kind`` 'transfer': output and log rows) or of
    ``aso stager`` (``kind`` 'stagein': stage-in rows, staging-only jobs). The kinds share
    everything but what they acquire, how rows become chunks and their write-ahead
    records, as Rucio's stager is its submitter restricted to STAGEIN requests."""

    def __init__(self, backend: StateBackend, proxies, tools: ToolFactory, topology: Topology, settings: PipelineSettings,
                 kind: str = TRANSFER_KIND, page_rows: int = PAGE_ROWS):
        if kind not in SUBMIT_BOXES:
            raise ValueError(f"unknown kind of pass {kind!r} (one of {', '.join(SUBMIT_BOXES)})")
        self.kind = kind
        #: a user's ACQUIRED rows read, planned and submitted at a time (see :meth:`_run_user`)
        self.page_rows = max(1, page_rows)
        self.backend = backend
        self.proxies = proxies
        self.tools = ToolCache(tools)
        self.topology = topology
        self.settings = settings
        self.submit_box = settings.sandbox(SUBMIT_BOXES[kind])
        self.monitor_box = settings.sandbox("monitor")
        self._group: GroupCommit | None = None
        #: records several users' submission ids in one write (see :meth:`_record_sids`)
        self._sids: GroupCommit | None = None
        #: endpoints found unreachable during this pass (set.add is atomic under the GIL)
        self._down: set[str] = set()

    # -- one write-ahead record (a user's chunks), from submission on ----------------------

    def _submit_chunks(self, user: str, chunks: list[Chunk], proxy: str, result: _UserResult,
                       dead: frozenset[str] = frozenset()) -> _Batch:
        batch = _Batch()
        for i, chunk in enumerate(chunks):
            if chunk.endpoint in self._down:
                # Another user's thread found it unreachable in this pass: do not make every
                # user wait out the client's connection retries again.
                batch.kept = chunks[i:]
                result.unreachable.add(chunk.endpoint)
                result.errors.append(f"{user}: FTS {chunk.endpoint} unreachable earlier in this pass, "
                                     f"{len(batch.kept)} chunk(s) kept for the next pass")
                log.warning("%s", result.errors[-1])
                break
            try:
                tool = self.tools.delegated(chunk.endpoint, user, proxy, self.settings)
                live = chunk.live(dead)
                if live:
                    job_id = tool.submit(live, self.settings.options_for(user, chunk), chunk.sid,
                                         multihop=chunk.multihop)
                    # one line per FTS job (not per file): where a file's trail through the logs starts
                    # (a multihop job's transfers are the hops of one file)
                    files = 1 if chunk.multihop else len(live)
                    log.info("user %s: FTS job %s: %d file(s) submitted to %s", user, job_id, files, chunk.endpoint,
                             extra={"fts_job": job_id, "task": _task_of(live)})
                else:  # every file of it was killed: submit nothing, but know where it went if it did
                    job_id = tool.expected_job_id(chunk.sid)
                batch.submitted.append((chunk, job_id))
            except TransferToolError as exc:
                if not exc.transient:
                    batch.refused.append((chunk, str(exc)))
                    log.warning("user %s: FTS refused chunk %s (%d files): %s", user, chunk.sid,
                                len(chunk.transfers), exc, extra={"task": _task_of(chunk.transfers)})
                    continue
                # Maybe it landed, maybe not: the chunk stays recorded and the next pass
                # resubmits the same sid (409 then means it had landed). The endpoint is
                # down, so the chunks after this one wait too.
                batch.kept = chunks[i:]
                self._down.add(chunk.endpoint)
                result.unreachable.add(chunk.endpoint)
                result.errors.append(f"{user}: FTS unreachable, {len(batch.kept)} chunk(s) kept for the next pass: {exc}")
                log.warning("%s", result.errors[-1])
                break
        return batch

    def _apply(self, items: list[_Pending]) -> None:
        """Record the outcome of several users' batches: one bulk state update for all of
        them (then :meth:`_follow_up`, in each user's own thread, writes the monitor entries
        and shrinks or removes the record). Every step is repeatable if a kill interrupts it."""
        updates: list[TransferUpdate] = []
        for item in items:
            batch, result = item.batch, item.result
            for chunk, job_id in batch.submitted:
                updates.extend(TransferUpdate(id=i, state="SUBMITTED", fts_id=job_id, fts_instance=chunk.endpoint,
                                              expect_state="ACQUIRED", path=chunk.path or None)
                               for i in chunk.live_ids(item.dead))
            for chunk, reason in batch.refused:
                for row_id in chunk.ids():
                    row = item.rows_by_id.get(row_id, {})
                    decision = self.settings.retry.decide(row.get("tm_transfer_retry_count"),
                                                          row.get("tm_transfer_max_retry_count"),
                                                          f"submission refused: {reason}")
                    updates.append(TransferUpdate(id=row_id, state=decision.state, reason=decision.reason,
                                                  expect_state="ACQUIRED"))
                    result.failed += decision.gives_up
                    result.retry += not decision.gives_up
        killed_now: set[str] = set()
        if updates:
            outcome = self.backend.update_transfers(updates)
            for skip in outcome.skipped:
                if str(skip.get("reason", "")).startswith("owned by"):
                    log.info("row %s was taken over by another worker (%s); its new owner follows it",
                             skip.get("id"), skip.get("reason"), extra={"rows": skip.get("id")})
                elif skip.get("state") in _KILLED_STATES:
                    killed_now.add(skip.get("id"))
                elif skip.get("state") != "SUBMITTED":
                    log.info("row %s was %s when its FTS job was recorded; the monitor will ignore its result",
                             skip.get("id"), skip.get("state"), extra={"rows": skip.get("id")})
        self._record_killed(items, killed_now)

    def _follow_up(self, item: _Pending) -> None:
        """Once a batch's state update is recorded: its monitor entries (one fsync of the
        user's folder for all of them), then its record shrunk to what is left or removed.
        Runs in the user's thread, so users' sandbox writes overlap instead of queuing
        behind the recorder."""
        now = int(time.time())
        user, batch, result = item.user, item.batch, item.result
        entries = []
        for chunk, job_id in batch.submitted:
            live = chunk.live(item.dead)
            if not live:
                continue  # all killed before submission: nothing to follow
            # A replayed chunk may already be followed: its entry knows what was handed over.
            if not self.monitor_box.exists(user, job_id):
                entries.append((job_id, MonitorEntry.new(job_id, user, chunk.endpoint, now, live)))
            result.jobs += 1
            result.files += len(chunk.live_ids(item.dead))
        self.monitor_box.write_records(user, entries)
        if batch.kept:
            self.submit_box.write_record(user, item.name, SubmitRecord(user, now, batch.kept))
        else:
            self.submit_box.remove(user, item.name)

    def _record_killed(self, items: list[_Pending], killed_now: set[str]) -> None:
        """Rows killed while their chunk was being submitted: record the FTS job on those
        still in KILL (the store keeps them KILL), so the retry manager cancels them in FTS,
        and ask FTS to cancel their files now (best effort: a row the retry manager already
        marked KILLED has nobody else to cancel it)."""
        updates: list[TransferUpdate] = []
        cancels: list[tuple[_Pending, str, str, set[str]]] = []  # (item, endpoint, job id, rows)
        for item in items:
            for chunk, job_id in item.batch.submitted:
                ids = set(chunk.ids())
                late = (ids & item.killed) | (ids & killed_now)
                if not late:
                    continue
                updates.extend(TransferUpdate(id=i, state="SUBMITTED", fts_id=job_id, fts_instance=chunk.endpoint,
                                              expect_state="KILL", path=chunk.path or None) for i in sorted(late))
                cancels.append((item, chunk.endpoint, job_id, late))
        if not updates:
            return
        self.backend.update_transfers(updates)
        for item, endpoint, job_id, late in cancels:
            # this runs in the group-commit thread, for several users: name each one
            with log_context(user=item.user, fts_job=job_id):
                self._cancel_killed(item, endpoint, job_id, late)

    def _cancel_killed(self, item: _Pending, endpoint: str, job_id: str, late: set[str]) -> None:
        log.info("user %s: %d file(s) of FTS job %s were killed while being submitted; canceling them",
                 item.user, len(late), job_id)
        try:
            tool = self.tools.delegated(endpoint, item.user, item.proxy, self.settings)
            status = tool.bulk_query([job_id]).get(job_id)
            if status is None or status.terminal:
                return
            if status.multihop:  # one row, and FTS3 cancels a multihop job only whole
                tool.cancel(job_id)
                return
            file_ids = [f.file_id for f in status.files
                        if f.transfer_id in late and not f.terminal and f.file_id is not None]
            if file_ids:
                tool.cancel(job_id, file_ids)
        except AsoError as exc:  # the retry manager cancels the rows still in KILL
            log.warning("user %s: cannot cancel killed files of FTS job %s yet: %s", item.user, job_id, exc)

    def _run_record(self, user: str, name: str, chunks: list[Chunk], proxy: str, rows_by_id: dict[str, dict],
                    result: _UserResult, group: GroupCommit | None = None, dead: frozenset[str] = frozenset(),
                    killed: frozenset[str] = frozenset()) -> _Batch:
        batch = self._submit_chunks(user, chunks, proxy, result, dead)
        item = _Pending(user, name, batch, rows_by_id, result, proxy, dead, killed)
        if group is None:
            self._apply([item])
        else:
            group.commit(item)
        self._follow_up(item)
        return batch

    # -- a pass -----------------------------------------------------------------------

    def _proxy(self, user: str) -> str | None:
        try:
            return str(self.proxies.get_proxy(user))
        except AsoError as exc:
            log.warning("user %s skipped: no usable proxy (%s); their transfers wait for the next pass", user, exc)
            return None

    def replay(self, summary: TransferSummary | None = None) -> int:
        """Finish submissions a killed pass (or an unreachable FTS) left behind."""
        done = 0
        records: dict[str, list[tuple[str, SubmitRecord]]] = defaultdict(list)
        for entry in self.submit_box.entries():
            record = self.submit_box.load_record(entry)
            if record is not None:
                records[entry.user].append((entry.name, record))
        for user, user_records in records.items():
            with log_context(user=user):
                done += self._replay_user(user, user_records, summary)
        return done

    def _replay_user(self, user: str, user_records: list[tuple[str, SubmitRecord]],
                     summary: TransferSummary | None) -> int:
        proxy = self._proxy(user)
        if proxy is None:
            return 0
        done = 0
        ids = [i for _, r in user_records for i in r.ids()]
        rows_by_id = {r["tm_id"]: r for r in self.backend.get_transfers(ids)}
        # killed since the record was written: not submitted (their FTS job is recorded
        # if an earlier attempt submitted them, so the retry manager cancels them there)
        # taken over by another worker since (or gone): not this worker's to submit; the new
        # owner resubmits their chunk's sid, which FTS answers with the same job
        gone = frozenset(i for i in ids if rows_by_id.get(i, {}).get("tm_aso_worker") != self.backend.worker)
        if gone:
            log.warning("user %s: %d row(s) of interrupted submissions now belong to another worker: left out",
                        user, len(gone))
        killed = frozenset(i for i, r in rows_by_id.items() if r["tm_transfer_state"] in _KILLED_STATES) - gone
        dead = killed | gone
        try:
            for name, record in user_records:
                result = _UserResult()
                self._run_record(user, name, record.chunks, proxy, rows_by_id, result, dead=dead, killed=killed)
                done += result.jobs
                if summary is not None:  # replayed jobs count among the pass's jobs too
                    summary.add(result)
        finally:
            self.tools.release(user)
        return done

    def pending_ids(self) -> dict[str, set[str]]:
        """Rows named in write-ahead records still on disk (not to be chunked again), by the
        user whose folder holds the record."""
        ids: dict[str, set[str]] = defaultdict(set)
        for entry in self.submit_box.entries():
            record = self.submit_box.load_record(entry)
            if record is not None:
                ids[entry.user].update(record.ids())
        return ids

    def run_user(self, user: str, pending: set[str]) -> _UserResult:
        try:
            with log_context(user=user):  # a pool thread: it does not inherit the caller's context
                return self._run_user(user, pending)
        finally:
            self.tools.release(user)  # a pass over 1000 users must not hold 1000 clients

    def _run_user(self, user: str, pending: set[str]) -> _UserResult:
        """A user's ACQUIRED rows, a page at a time (at most ``acquire_limit`` in all): each
        page planned, recorded and submitted before the next is read, so a thread holds a
        page's rows, not a backlog's (eight threads over users with 10,000 rows each took a
        pass to 425 MB)."""
        result = _UserResult()
        proxy: str | None = None
        seen: set[str] = set()
        left = self.settings.acquire_limit
        while left > 0:
            want = min(self.page_rows, left)
            # the user's rows in interrupted submissions (``pending``) are not this page's:
            # read past them
            limit = want + len(pending)
            page = self.backend.acquired_transfers(user, limit, request_type=self.kind)
            if len(page) == limit and any(r.get("tm_sid") for r in page):
                # Rows planned elsewhere are rebuilt into their chunks by sid, and a chunk
                # must not be cut between two pages: their user's rows are read whole.
                limit = left + len(pending)
                page = self.backend.acquired_transfers(user, limit, request_type=self.kind)
            # a row handled earlier in this pass that is still ACQUIRED is not taken twice
            rows = [r for r in page if r["tm_id"] not in pending and r["tm_id"] not in seen]
            if not rows:
                break
            if proxy is None:
                proxy = self._proxy(user)
                if proxy is None:
                    result.skipped = True
                    break
            seen.update(r["tm_id"] for r in rows)
            left -= len(rows)
            kept = self._run_page(user, rows, proxy, result)
            if kept or len(page) < limit:
                break  # an FTS endpoint is down (the rest waits for the next pass), or all read
        return result

    def _run_page(self, user: str, rows: list[dict], proxy: str, result: _UserResult) -> bool:
        """Plan, record and submit one page of a user's rows; answers whether chunks were
        kept for the next pass (an FTS endpoint unreachable)."""
        rows_by_id = {row["tm_id"]: row for row in rows}
        # Rows with a submission id but no write-ahead record here were planned by a host that
        # died (or by this one, killed between the two records): their chunks are rebuilt
        # with the same sids, so FTS answers a chunk that went with its job instead of
        # running it twice.
        planned = [r for r in rows if r.get("tm_sid")]
        plan = self._plan([r for r in rows if not r.get("tm_sid")])
        if planned:
            self._replan(user, planned, plan)
            result.adopted += len(planned)
        if plan.unconfigured:
            # This host's configuration lacks a site the rows name: not the rows' fault, so
            # they go back to NEW untouched and the pass says what to fix (exit 2).
            self.backend.release_transfers([row_id for row_id, _ in plan.unconfigured])
            result.misconfigured.update(reason for _, reason in plan.unconfigured)
        refused: list[TransferUpdate] = []
        for row, reason in plan.bad:
            decision = self.settings.retry.decide(0, None, reason, final=True)
            refused.append(TransferUpdate(id=row["tm_id"], state=decision.state, reason=decision.reason,
                                          expect_state="ACQUIRED"))
            result.failed += 1
        for row, reason in plan.no_path:
            # No link reaches the destination (today): the row's retries decide, as for a
            # refused submission; the reason says NO_PATH so an operator sees what to fix.
            decision = self.settings.retry.decide(row.get("tm_transfer_retry_count"),
                                                  row.get("tm_transfer_max_retry_count"), reason)
            refused.append(TransferUpdate(id=row["tm_id"], state=decision.state, reason=decision.reason,
                                          expect_state="ACQUIRED"))
            result.failed += decision.gives_up
            result.retry += not decision.gives_up
            result.no_path += 1
        if plan.no_path:
            log.warning("user %s: %d row(s) have no path between their sites: %s", user, len(plan.no_path),
                        "; ".join(sorted({reason for _, reason in plan.no_path})[:3]))
        if refused:
            self.backend.update_transfers(refused)
        chunks = plan.chunks
        if not chunks:
            return False
        # Each row's sid in the state backend first (whoever holds the row later resubmits
        # that sid), then one write-ahead record here for all of this user's chunks; both
        # before any submission, the record shrunk or removed only once the submissions'
        # effects are recorded.
        sids = {t.id: chunk.sid for chunk in chunks for t in chunk.transfers}
        if self._sids is None:
            self.backend.set_submission_ids(sids)
        else:
            self._sids.commit(sids)
        name = uuid.uuid4().hex
        self.submit_box.write_record(user, name, SubmitRecord(user, int(time.time()), chunks))
        return bool(self._run_record(user, name, chunks, proxy, rows_by_id, result, self._group).kept)

    def _record_sids(self, batches: list[dict[str, str]]) -> None:
        """Record the submission ids of several users' chunks in one write: users' threads
        plan in parallel, and each waits only for the write that holds its ids (a row id
        is in one user's batch only, so the batches merge without clashing)."""
        merged: dict[str, str] = {}
        for sids in batches:
            merged.update(sids)
        self.backend.set_submission_ids(merged)

    def _plan(self, rows: list[dict], new_sid: Callable[[], str] | None = None) -> Plan:
        sid = new_sid or (lambda: uuid.uuid4().hex)
        if self.kind == STAGEIN_KIND:
            return plan_stageins(rows, self.topology, self.settings.max_files_per_job, self.settings.staging, sid)
        return plan_chunks(rows, self.topology, self.settings.max_files_per_job, sid, self.settings.staging)

    def _replan(self, user: str, rows: list[dict], plan: Plan) -> None:
        """Rebuild the chunks of rows planned elsewhere, one per recorded sid, into ``plan``."""
        by_sid: dict[str, list[dict]] = defaultdict(list)
        for row in rows:
            by_sid[row["tm_sid"]].append(row)
        for sid, group in sorted(by_sid.items()):
            again = self._plan(group, lambda sid=sid: sid)
            if len(again.chunks) > 1:
                # the links or job size changed since the chunk was cut: one sid cannot name
                # two jobs, so the rows are planned afresh (if the first chunk did reach FTS,
                # its files are copied a second time: overwrite is on, nothing is lost)
                log.warning("user %s: chunk %s cannot be rebuilt as it was (configuration changed): planned anew",
                            user, sid)
                again = self._plan(group)
            plan.chunks += again.chunks
            plan.no_path += again.no_path
            plan.unconfigured += again.unconfigured
            plan.bad += again.bad
        log.info("user %s: %d row(s) planned by another host (or an interrupted pass) resubmitted under their "
                 "recorded sid(s)", user, len(rows))

    def run(self, progress: Callable[[int, int], None] | None = None) -> TransferSummary:
        summary = TransferSummary(component=LOCKS[self.kind])
        try:
            summary.replayed = self.replay(summary)
            users = self.backend.active_users(request_type=self.kind)
            # the limits of the same topology the pass routes over (both re-read together);
            # a stage-in copies nothing over a link: not throttled, as Rucio's stager
            limits = ThrottleLimits.from_topology(self.topology) if self.kind == TRANSFER_KIND else None
            # new work of this worker's share of the users (all of them when it is alone);
            # of the others', only rows pinned to it by name
            own, others = self.backend.share(users)
            acquired = (self.backend.acquire_transfers(own, self.settings.acquire_limit, limits,
                                                       request_type=self.kind, pinned_only=others) if users else 0)
            summary.acquired, summary.held = int(acquired), getattr(acquired, "held", 0)
            pending = self.pending_ids()
            users = sorted(set(users))
            if progress:
                progress(0, len(users))
            self._group = GroupCommit(self._apply, size=_rows, name="transfer-recorder")
            self._sids = GroupCommit(self._record_sids, size=len, name="sid-recorder")
            with ThreadPoolExecutor(max_workers=max(1, self.settings.transfer_threads)) as pool:
                futures = {u: pool.submit(self.run_user, u, pending.get(u, set())) for u in users}
                for done, (user, future) in enumerate(futures.items(), 1):
                    try:
                        r = future.result()
                    except (SandboxError, FencedError):
                        raise  # the sandbox is broken, or this worker was taken over: the pass stops
                    except AsoError as exc:
                        summary.errors.append(f"{user}: {exc}")
                        log.error("user %s: %s", user, exc, extra={"user": user})
                        continue
                    summary.add(r)
                    summary.users += 1 if (r.jobs or r.retry or r.failed) else 0
                    if r.skipped:
                        summary.users_skipped.append(user)
                    if progress:
                        progress(done, len(users))
        finally:
            for group in (self._group, self._sids):
                if group is not None:
                    group.close()
            self._group = self._sids = None
            self.tools.close()
        return summary


def _task_of(transfers: Iterable[Transfer]) -> str | None:
    """The task of a chunk's files when they are all of one task (the usual case), for the
    log context; None when they mix tasks."""
    tasks = {(t.metadata or {}).get("taskname") for t in transfers}
    return tasks.pop() if len(tasks) == 1 else None


def run_transfer(backend: StateBackend, proxies, tools: ToolFactory, topology: Topology, settings: PipelineSettings,
                 progress: Callable[[int, int], None] | None = None) -> TransferSummary:
    """One ``aso transfer`` pass over ``topology`` (the configuration's sites, links and
    routes: :meth:`aso.config.Config.topology`)."""
    return TransferPass(backend, proxies, tools, topology, settings).run(progress)


def run_stager(backend: StateBackend, proxies, tools: ToolFactory, topology: Topology, settings: PipelineSettings,
               progress: Callable[[int, int], None] | None = None) -> TransferSummary:
    """One ``aso stager`` pass: the transfer pass over stage-in rows only."""
    return TransferPass(backend, proxies, tools, topology, settings, STAGEIN_KIND).run(progress)
