"""What the transfer components share: their settings from the configuration, the sandboxes,
and the transfer tools per (endpoint, user).

Components receive these as objects, so tests and the benchmark can build them directly
(with a real backend, a real proxy source and a real FTS service) instead of through a
configuration file.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from aso.components.handoffs import Chunk
from aso.components.retry_policy import RetryPolicy
from aso.components.staging import StagingSettings
from aso.errors import BackendUnavailable
from aso.sandbox import Sandbox
from aso.transfertools import JobOptions, TransferTool

log = logging.getLogger("aso.pipeline")

ToolFactory = Callable[[str, str], TransferTool]
T = TypeVar("T")
R = TypeVar("R")
A = TypeVar("A")


@dataclass
class PipelineSettings:
    sandbox_root: Path
    max_files_per_job: int = 50
    acquire_limit: int = 10000
    transfer_threads: int = 8
    monitor_threads: int = 4
    job_timeout: int = 72000
    file_timeout: int = 18000
    reporter_threads: int = 8
    #: RETRY or FAILED for refused submissions and failed transfers
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    cooloff: int = 7200
    stuck_after: int = 3600
    delegation_lifetime: dt.timedelta = dt.timedelta(hours=48)
    delegation_renew_below: dt.timedelta = dt.timedelta(hours=24)
    job_options: JobOptions = field(default_factory=JobOptions)
    #: the components' lock folder; the retry manager takes the transfer lock to release
    #: stuck rows safely (None: it does not release them)
    lock_dir: Path | None = None
    #: with a receiver, the monitor polls only jobs with no news for this many seconds
    #: (0: every job at every pass)
    poll_after: int = 0
    #: [staging]: bring_online and copy_pin_lifetime of jobs from tape and of stage-ins
    staging: StagingSettings = field(default_factory=StagingSettings)

    @classmethod
    def from_config(cls, config) -> PipelineSettings:
        fts, tr, mon, rep, rm = config.fts, config.transfer, config.monitor, config.reporter, config.retry_manager
        return cls(
            sandbox_root=Path(config.sandbox.root),
            lock_dir=Path(config.aso.lock_dir),
            max_files_per_job=tr.max_files_per_job,
            acquire_limit=tr.acquire_limit,
            transfer_threads=tr.threads,
            monitor_threads=mon.threads,
            job_timeout=mon.job_timeout,
            file_timeout=mon.file_timeout,
            reporter_threads=rep.threads,
            poll_after=mon.poll_after if config.receiver.brokers else 0,
            staging=StagingSettings.from_config(config),
            retry=RetryPolicy.for_transfers(config),
            cooloff=rm.cooloff,
            stuck_after=rm.stuck_after,
            delegation_lifetime=dt.timedelta(seconds=fts.delegation_lifetime),
            delegation_renew_below=dt.timedelta(seconds=fts.delegation_renew_below),
            job_options=JobOptions(
                verify_checksum=fts.verify_checksum,
                overwrite=fts.overwrite,
                retry=fts.retry,
                retry_delay=fts.retry_delay,
                max_time_in_queue=fts.max_time_in_queue,
                priority=fts.priority,
                metadata={"issuer": "ASO", "instance": config.aso.instance},
            ),
        )

    def options_for(self, user: str, chunk: Chunk | None = None) -> JobOptions:
        """A user's job options: the job metadata names the user, so that a completion
        message (which carries it) leads the receiver to the user's monitor entry; a
        chunk from tape (or a stage-in chunk) adds its bring_online and copy_pin_lifetime."""
        staging = {"bring_online": chunk.bring_online, "copy_pin_lifetime": chunk.copy_pin_lifetime} if chunk else {}
        return dataclasses.replace(self.job_options, metadata={**self.job_options.metadata, "user": user}, **staging)

    def sandbox(self, kind: str) -> Sandbox:
        return Sandbox(self.sandbox_root, kind)


class ToolCache:
    """One tool per (endpoint, user) for the length of a pass: each costs a connection and
    a whoami, and delegation is checked once per user and endpoint per pass."""

    def __init__(self, factory: ToolFactory):
        self.factory = factory
        self._tools: dict[tuple[str, str], TransferTool] = {}
        self._delegated: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def get(self, endpoint: str, user: str, proxy_path: str) -> TransferTool:
        key = (endpoint, user)
        with self._lock:
            tool = self._tools.get(key)
            if tool is None:
                tool = self._tools[key] = self.factory(endpoint, proxy_path)
        return tool

    def delegated(self, endpoint: str, user: str, proxy_path: str, settings: PipelineSettings) -> TransferTool:
        tool = self.get(endpoint, user, proxy_path)
        if (endpoint, user) not in self._delegated:
            tool.delegate(settings.delegation_lifetime, settings.delegation_renew_below)
            self._delegated.add((endpoint, user))
        return tool

    def release(self, user: str, endpoint: str | None = None) -> None:
        """Close and forget a user's tools (at one endpoint, or all); their delegation is
        remembered for the pass."""
        with self._lock:
            mine = [key for key in self._tools if key[1] == user and endpoint in (None, key[0])]
            tools = [self._tools.pop(key) for key in mine]
        for tool in tools:
            tool.close()

    def close(self) -> None:
        for tool in self._tools.values():
            tool.close()
        self._tools.clear()


class GroupCommit(Generic[T, R]):
    """Records the work of many threads together (group commit): the threads work in
    parallel, and one writer applies whatever items have queued up meanwhile in a single
    call, instead of every thread waiting its turn for the database's write lock (on SQLite,
    per-user transactions spent most of a pass waiting for BEGIN IMMEDIATE).

    ``commit(item)`` returns once the item is applied, with what ``apply`` returned for its
    group, or raises what ``apply`` raised (the caller keeps its sandbox entries then)."""

    def __init__(self, apply: Callable[[list[T]], R], *, size: Callable[[T], int] = lambda _: 1,
                 max_size: int = 20000, name: str = "group-commit"):
        self._apply = apply
        self._size = size
        self._max_size = max_size
        self._queue: queue.Queue[tuple[T, Future] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def commit(self, item: T) -> R:
        done: Future = Future()
        self._queue.put((item, done))
        return done.result()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group, size, closing = [first], self._size(first[0]), False
            while size < self._max_size:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    closing = True
                    break
                group.append(more)
                size += self._size(more[0])
            try:
                outcome = self._apply([item for item, _ in group])
            except BackendUnavailable as exc:
                for _, done in group:
                    done.set_exception(exc)
            except Exception:
                # One item's bad data must not hold the others back: apply them one by one
                # (a refused call writes nothing, so nothing is applied twice).
                for item, done in group:
                    self._apply_one(item, done)
            else:
                for _, done in group:
                    done.set_result(outcome)
            if closing:
                return

    def _apply_one(self, item: T, done: Future) -> None:
        try:
            done.set_result(self._apply([item]))
        except BaseException as exc:
            done.set_exception(exc)


def bounded_map(pool: Executor, fn: Callable[[A], R], items: Iterable[A], window: int) -> Iterator[R]:
    """``fn`` over ``items`` on ``pool``, results in order, at most ``window`` submitted and
    not yet consumed: a pass over 10,000 users holds a few users' work (their rows, their
    sandbox entries, their results) at a time, not every user's at once."""
    pending: deque[Future] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
