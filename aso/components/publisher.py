"""The publisher: record transferred files in a catalog, in blocks.

Rules (docs/publication.md explains them for operators):

- Only rows of this worker whose transfer is DONE and whose publish flag is set are acquired.
- Per task and output dataset, files the catalog already holds are marked DONE with the
  block that holds them (this is also how a pass killed after the catalog commit and before
  the state update finishes its work: nothing is published twice).
- Full blocks (``max_files_per_block``) are published at once. The remainder (the "tail") is
  published only when the task is final, when the task's published data have lagged more
  than ``block_closure_timeout`` (measured from the last publication, or, for a task never
  published, from when its oldest waiting file became ready), or when the oldest waiting file
  is older than ``expiration`` (then whatever cannot be published is FAILED, not retried).
- Rows not ready stay ACQUIRED for the next pass (they are this worker's; nobody else may take
  them, and ACQUIRED -> ACQUIRED costs no write).
- Block names are ``<dataset>#<uuid5 of the sorted LFNs>``: the same file set always gets the
  same name, and the catalog refuses a block name twice.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from aso import validate
from aso.catalogs.base import Block, Catalog, CatalogFile
from aso.components.pipeline import GroupCommit
from aso.components.retry_policy import RetryPolicy
from aso.errors import ValidationError
from aso.logs import log_context
from aso.state import PublicationUpdate, StateBackend

log = logging.getLogger("aso.publisher")

#: CRAB task states after which no more files will come for the task.
FINAL_TASK_STATES = frozenset({"COMPLETED", "FAILED", "KILLED", "REMOVED", "FINISHED"})
_BLOCK_NAMESPACE = uuid.UUID("6f1c3a52-8d0e-4a55-9b3e-0a5e2b7c9d41")
NO_METADATA = "no file metadata found for this LFN (not an EDM file, or the job did not upload its metadata)"


@dataclass
class PublisherSettings:
    max_files_per_block: int = 100
    block_closure_timeout: int = 9400
    expiration: int = 3 * 86400
    threads: int = 5
    #: RETRY or FAILED for a block the catalog refused
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @classmethod
    def from_config(cls, config) -> PublisherSettings:
        p = config.publisher
        return cls(
            max_files_per_block=int(p.max_files_per_block),
            block_closure_timeout=int(p.block_closure_timeout),
            expiration=int(p.expiration),
            threads=int(p.threads),
            retry=RetryPolicy.for_publication(config),
        )


@dataclass
class PublishSummary:
    acquired: int = 0
    rows: int = 0
    tasks: int = 0
    blocks: int = 0
    published: int = 0
    already_in_catalog: int = 0
    failed: int = 0
    retry: int = 0
    waiting: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, other: PublishSummary) -> None:
        for name in ("rows", "tasks", "blocks", "published", "already_in_catalog", "failed", "retry", "waiting"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors.extend(other.errors)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def files_handled(self) -> int:
        """Files this pass handled (aso_pass_files): published, found in the catalog already, failed or to retry."""
        return self.published + self.already_in_catalog + self.failed + self.retry

    def line(self) -> str:
        return (
            f"publisher: {self.acquired} acquired, {self.rows} rows in {self.tasks} tasks, {self.blocks} blocks, "
            f"{self.published} published, {self.already_in_catalog} already in catalog, {self.failed} failed, "
            f"{self.retry} to retry, {self.waiting} waiting"
        )


@dataclass
class TaskPlan:
    """What one pass will do for one task, decided before anything is written."""

    task: str
    #: blocks to publish, each with the row ids it carries
    blocks: list[tuple[Block, list[str]]] = field(default_factory=list)
    #: rows already in the catalog: id -> block name
    already: dict[str, str] = field(default_factory=dict)
    #: rows that fail now: id -> reason
    failures: dict[str, str] = field(default_factory=dict)
    #: rows left ACQUIRED for a later pass
    waiting: list[str] = field(default_factory=list)
    #: True when the tail was published because the files expired: failures are final
    expired: bool = False
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)


def block_name(dataset: str, lfns: list[str]) -> str:
    """``<dataset>#<uuid>``, the uuid derived from the file set so a re-run names it alike."""
    return f"{dataset}#{uuid.uuid5(_BLOCK_NAMESPACE, chr(10).join(sorted(lfns)))}"


def _ready_time(row: dict[str, Any]) -> int:
    """When the file became publishable: its transfer end, else its last change."""
    for key in ("tm_end_time", "tm_last_update", "tm_start_time"):
        if row.get(key):
            return int(row[key])
    return 0


def tail_due(task: dict[str, Any] | None, oldest_ready: int, settings: PublisherSettings, now: int) -> tuple[bool, bool]:
    """(publish the partial block now?, because the files expired?)."""
    expired = now - oldest_ready > settings.expiration
    if expired:
        return True, True
    if task and str(task.get("tm_task_status") or "").upper() in FINAL_TASK_STATES:
        return True, False
    # A task never published starts its clock when its oldest waiting file became ready:
    # a new task's first files wait as long as any later tail (CRAB forced them at once).
    last = (task or {}).get("tm_last_publication")
    since = oldest_ready if last is None else last
    return now - int(since) > settings.block_closure_timeout, False


def plan_task(
    backend: StateBackend,
    catalog: Catalog,
    settings: PublisherSettings,
    taskname: str,
    rows: list[dict[str, Any]],
    now: int | None = None,
) -> TaskPlan:
    """Decide blocks, failures and waiting rows for one task's ACQUIRED rows (reads only)."""
    now = int(time.time()) if now is None else now
    plan = TaskPlan(task=taskname, rows={r["tm_id"]: r for r in rows})
    # A row stored before the LFN rule was tightened must not reach the catalog (nor fail
    # the metadata look-up for the whole task): it fails on its own, saying why.
    valid = []
    for row in rows:
        try:
            validate.lfn(row["tm_destination_lfn"], "destination_lfn")
        except ValidationError as exc:
            plan.failures[row["tm_id"]] = f"not publishable: {exc}"
            continue
        valid.append(row)
    rows = valid
    task = backend.get_task(taskname)
    metadata = backend.get_file_metadata(sorted({r["tm_destination_lfn"] for r in rows}))
    by_dataset: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        meta = metadata.get(row["tm_destination_lfn"])
        if meta is None:
            plan.failures[row["tm_id"]] = NO_METADATA
            continue
        dataset = meta.get("outdataset") or (task or {}).get("tm_publish_name")
        if not dataset:
            plan.failures[row["tm_id"]] = "no output dataset: neither the file metadata nor the task names one"
            continue
        by_dataset[dataset].append(row)
    for dataset, ds_rows in sorted(by_dataset.items()):
        held = catalog.dataset_files(dataset)
        todo = []
        for row in ds_rows:
            lfn = row["tm_destination_lfn"]
            if lfn in held:
                plan.already[row["tm_id"]] = held[lfn]
            else:
                todo.append(row)
        todo.sort(key=lambda r: (_ready_time(r), r["tm_destination_lfn"]))
        size = settings.max_files_per_block
        chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
        if chunks and len(chunks[-1]) < size:
            publish_tail, expired = tail_due(task, _ready_time(chunks[-1][0]), settings, now)
            plan.expired = plan.expired or expired
            if not publish_tail:
                plan.waiting.extend(r["tm_id"] for r in chunks.pop())
        for chunk in chunks:
            files = [
                CatalogFile(
                    lfn=r["tm_destination_lfn"],
                    size=int(r["tm_filesize"] or 0),
                    adler32=str(r["tm_checksum"] or ""),
                    metadata=metadata[r["tm_destination_lfn"]],
                )
                for r in chunk
            ]
            block = Block(dataset, block_name(dataset, [f.lfn for f in files]), files)
            plan.blocks.append((block, [r["tm_id"] for r in chunk]))
    return plan


def _failure(row: dict[str, Any], reason: str, settings: PublisherSettings, final: bool) -> PublicationUpdate:
    decision = settings.retry.decide(row.get("tm_publication_retry_count"), row.get("tm_publication_max_retry_count"),
                                     reason, final=final)
    if decision.gives_up:
        return PublicationUpdate(id=row["tm_id"], state="FAILED", reason=decision.reason)
    return PublicationUpdate(id=row["tm_id"], state="RETRY", reason=decision.reason, retry_increment=1)


def _held_meanwhile(catalog: Catalog, block: Block) -> dict[str, str]:
    """The files of ``block`` its dataset holds now (LFN -> block name); none when the
    catalog cannot say (it is down: the block's failure stands)."""
    try:
        held = catalog.dataset_files(block.dataset)
    except Exception as exc:  # noqa: BLE001 - the caller records the original failure
        log.warning("cannot read dataset %s back after a failed publication: %s", block.dataset, exc)
        return {}
    return {f.lfn: held[f.lfn] for f in block.files if f.lfn in held}


def _overtaken(plan: TaskPlan, ids: list[str], held: dict[str, str], block: Block) -> list[PublicationUpdate]:
    """A refused block of which ``held`` files were published meanwhile by another
    publisher: those DONE in the block that holds them, the others RETRY with no retry
    counted (the refusal was the race's, not theirs)."""
    updates = []
    for row_id in ids:
        name = held.get(plan.rows[row_id]["tm_destination_lfn"])
        if name is not None:
            updates.append(PublicationUpdate(id=row_id, state="DONE", block_name=name))
        else:
            updates.append(PublicationUpdate(
                id=row_id, state="RETRY", retry_increment=0,
                reason=f"block {block.name} overlapped files another publisher put in {block.dataset} meanwhile; "
                       "published in a new block next pass"))
    return updates


def execute_plan(
    backend: StateBackend, catalog: Catalog, settings: PublisherSettings, plan: TaskPlan
) -> PublishSummary:
    """Publish the plan's blocks and record every outcome (one state update per block)."""
    summary = PublishSummary(rows=len(plan.rows), tasks=1, waiting=len(plan.waiting))
    if plan.already:
        backend.update_publication(
            [PublicationUpdate(id=i, state="DONE", block_name=b) for i, b in sorted(plan.already.items())]
        )
        summary.already_in_catalog += len(plan.already)
    if plan.failures:
        # Missing metadata or dataset is not cured by retrying: fail at once.
        backend.update_publication(
            [PublicationUpdate(id=i, state="FAILED", reason=r) for i, r in sorted(plan.failures.items())]
        )
        summary.failed += len(plan.failures)
    published_any = False
    for block, ids in plan.blocks:
        try:
            catalog.publish_block(block)
        except Exception as exc:  # noqa: BLE001 - any catalog failure is recorded on the rows
            reason = f"publication of block {block.name} failed: {exc}"
            log.warning("%s: %s", plan.task, reason)
            summary.errors.append(reason)
            held = _held_meanwhile(catalog, block)
            if held:
                # Another publisher (a host this one took over from, that went on for a
                # moment) put some of these files in the dataset since the plan was made:
                # they are published, once; the rest go in a block of their own next pass.
                updates = _overtaken(plan, ids, held, block)
                backend.update_publication(updates)
                summary.already_in_catalog += sum(1 for u in updates if u.state == "DONE")
                summary.retry += sum(1 for u in updates if u.state == "RETRY")
                continue
            updates = [_failure(plan.rows[i], reason, settings, plan.expired) for i in ids]
            backend.update_publication(updates)
            summary.failed += sum(1 for u in updates if u.state == "FAILED")
            summary.retry += sum(1 for u in updates if u.state == "RETRY")
            continue
        # The catalog commit is durable now; if we die before the next line, the next pass
        # finds these LFNs in the catalog and marks them DONE without publishing again.
        backend.update_publication([PublicationUpdate(id=i, state="DONE", block_name=block.name) for i in ids])
        summary.blocks += 1
        summary.published += len(ids)
        published_any = True
    if published_any:
        backend.update_last_publication(plan.task)
    return summary


class PublicationRecorder:
    """The publication state writes of every user thread, applied by one thread (a group
    commit): what the threads queue up meanwhile goes in one update, instead of each
    thread's transactions waiting their turn for the database's write lock. Each call
    returns once its write is applied (or raises what applying it raised), so a block's
    rows are DONE before its thread goes on, as with direct calls."""

    def __init__(self, backend: StateBackend):
        self.backend = backend
        self._group = GroupCommit(self._apply, size=lambda item: len(item[1]) if item[0] == "rows" else 1,
                                  name="publication-recorder")

    def update_publication(self, updates: list[PublicationUpdate]) -> None:
        self._group.commit(("rows", updates))

    def update_last_publication(self, task: str) -> None:
        self._group.commit(("task", task))

    def close(self) -> None:
        self._group.close()

    def _apply(self, items: list[tuple[str, Any]]) -> None:
        rows = [u for kind, value in items if kind == "rows" for u in value]
        if rows:
            self.backend.update_publication(rows)
        for kind, value in items:
            if kind == "task":
                self.backend.update_last_publication(value)


def publish_user(
    backend: StateBackend, catalog: Catalog, settings: PublisherSettings, rows: list[dict[str, Any]], now: int | None = None,
    recorder: PublicationRecorder | None = None,
) -> PublishSummary:
    """Publish one user's acquired rows, task by task; the state writes go through
    ``recorder`` when given (else straight to ``backend``)."""
    summary = PublishSummary()
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_task[row["tm_taskname"]].append(row)
    for taskname, task_rows in sorted(by_task.items()):
        # a pool thread: it does not inherit the caller's context
        with log_context(user=task_rows[0]["tm_username"], task=taskname):
            try:
                plan = plan_task(backend, catalog, settings, taskname, task_rows, now)
                summary.add(execute_plan(recorder or backend, catalog, settings, plan))
            except Exception as exc:  # noqa: BLE001 - one task's trouble must not stop the others
                log.exception("task %s: publication pass failed", taskname)
                summary.errors.append(f"{taskname}: {exc}")
                summary.rows += len(task_rows)
                summary.waiting += len(task_rows)
    return summary


#: rows of one read of the publisher's pass (see :func:`run_publisher`)
PAGE_ROWS = 10_000


def run_publisher(
    backend: StateBackend,
    catalog: Catalog,
    settings: PublisherSettings,
    *,
    now: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    page_rows: int = PAGE_ROWS,
) -> PublishSummary:
    """One publication pass: acquire, then publish per user in ``settings.threads`` threads.

    The acquired rows are read a page of users at a time (about ``page_rows`` rows), the
    next page once the users of the one before last are done: memory holds two pages
    whatever the backlog (all of it at once was 340 MB at 100,000 rows). A user with more
    rows than a page gets a page's worth this pass, the rest the next.

    ``progress(done_users, users_so_far)`` is called as users finish.
    """
    summary = PublishSummary(acquired=backend.acquire_publication())
    recorder = PublicationRecorder(backend)
    done = seen = 0
    try:
        with ThreadPoolExecutor(max_workers=max(1, settings.threads)) as pool:
            waiting: list = []  # the futures of the page before
            for by_user in _pages(backend, page_rows):
                seen += len(by_user)
                if progress:
                    progress(done, seen)
                futures = [pool.submit(publish_user, backend, catalog, settings, rows, now, recorder)
                           for rows in by_user.values()]
                for future in waiting:
                    summary.add(future.result())
                    done += 1
                    if progress:
                        progress(done, seen)
                waiting = futures
            for future in waiting:
                summary.add(future.result())
                done += 1
                if progress:
                    progress(done, seen)
    finally:
        recorder.close()
    return summary


def _pages(backend: StateBackend, page_rows: int) -> Iterator[dict[str, list[dict[str, Any]]]]:
    """The acquired rows, grouped by user, a page of whole users at a time: a full page's
    last user may go on past it, so it is left to start the next page."""
    after: str | None = None
    while True:
        rows = backend.acquired_publication(limit=page_rows, after_user=after)
        by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:  # in the database's order of users
            by_user[row["tm_username"]].append(row)
        if len(rows) == page_rows and len(by_user) > 1:
            del by_user[rows[-1]["tm_username"]]
        if by_user:
            yield by_user
        if len(rows) < page_rows:
            return
        after = next(reversed(by_user))
