"""The executor: a dispatcher thread and a bounded pool of copy workers.

The dispatcher wakes on a submission, on a finished copy, or every ``poll_seconds`` (for
retry delays and max_time_in_queue); it expires overdue jobs, asks the scheduler which
queued files may start, claims them in one statement and hands them to the workers.

Progress is checkpointed by time and by bytes, never per buffer: the copy loop itself only
compares two numbers, so bookkeeping does not throttle the data (Staccato slept 0.1 s per
64 KiB write).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

from aso.ftsd.db import CopyTask, JobStore
from aso.ftsd.protocols import CopyError, Destination, delete
from aso.ftsd.protocols.file import sync_file_systems
from aso.ftsd.scheduler import Running, Scheduler
from aso.ftsd.transfer import discard_partial, run_copy
from aso.logs import log_context

log = logging.getLogger("aso.fts.executor")


class Interrupted(Exception):
    """A copy stopped on purpose: canceled by the user or expired (``canceled``), or the
    service is stopping (the file goes back to the queue and resumes later)."""

    def __init__(self, canceled: bool):
        super().__init__("canceled" if canceled else "service stopping")
        self.canceled = canceled


@dataclass
class ExecutorSettings:
    workers: int = 4
    buffer_size: int = 4 * 1024 * 1024
    checkpoint_seconds: float = 1.0
    checkpoint_bytes: int = 256 * 1024 * 1024
    #: retries for jobs submitted with retry 0 ("the server's default")
    default_retry: int = 0
    poll_seconds: float = 1.0
    io_timeout: float = 60.0
    #: fsync local destination files before checkpoints and before the rename, so a power cut
    #: cannot lose a file the service reported FINISHED
    durable: bool = True
    #: most candidates read per scheduling round
    scan: int = 5000
    #: move no data: queued files are FINISHED at once (benchmarks of the pipeline around FTS)
    simulate: bool = False
    #: local folders file:// URLs must lie under (symlinks resolved); set by the service
    roots: tuple[str, ...] = ()
    #: read local destination files back for their checksum (else: of the bytes written)
    reread_destination: bool = False


class CopyTotals:
    """What the copies did since the service started, for ``/metrics``: counted in memory
    where copies end, so a finished file costs no database work for its metrics."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.bytes_copied = 0
        self.finished = 0
        self.failed = 0

    def copied(self, nbytes: int) -> None:
        with self._lock:
            self.bytes_copied += max(0, nbytes)

    def ended(self, state: str, result) -> None:
        """A recorded finish (``result`` None: the file had been canceled or expired
        meanwhile, so this copy ended nothing)."""
        if result is None:
            return
        with self._lock:
            if state == "FINISHED":
                self.finished += 1
            else:
                self.failed += 1

    def snapshot(self) -> tuple[int, int, int]:
        """(bytes copied, files finished, attempts failed)."""
        with self._lock:
            return self.bytes_copied, self.finished, self.failed


class _Call:
    __slots__ = ("op", "args", "kwargs", "sync", "done", "result", "error", "on_void")

    def __init__(self, op: str, args: tuple, kwargs: dict, sync: str | None, on_void=None):
        self.op, self.args, self.kwargs, self.sync = op, args, kwargs, sync
        self.done = threading.Event()
        self.result = self.error = None
        #: called when a finish finds its file no longer running (canceled or expired meanwhile)
        self.on_void = on_void


class GroupRecorder:
    """One thread records what the workers report (the mark before a rename, the end of a
    copy) and commits whatever several workers reported meanwhile in one transaction: with
    many small files, a transaction per file per step made the workers queue for the store.

    Durability is grouped the same way: a copy made with ``sync_later`` (no fsync of its own)
    is recorded FINISHED only after its file system was synced, once for the whole batch."""

    def __init__(self, store: JobStore, batch: int = 256, on_promoted=None, totals: CopyTotals | None = None):
        self.store = store
        self.batch = batch
        self.totals = totals or CopyTotals()
        #: called when a recorded finish let a multihop job's next hop go (a round is due)
        self.on_promoted = on_promoted
        self._calls: queue.Queue[_Call | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="fts-recorder", daemon=True)
        self._thread.start()

    def call(self, op: str, *args, sync: str | None = None, **kwargs):
        """Record ``op`` ("checkpoint" or "finish") and return its result once committed."""
        c = self.submit(op, *args, sync=sync, **kwargs)
        c.done.wait()
        if c.error is not None:
            raise c.error
        return c.result

    def submit(self, op: str, *args, sync: str | None = None, on_void=None, **kwargs) -> _Call:
        """Queue ``op`` without waiting (``sync``: a path to sync first; ``on_void``: called
        when a finish is recorded for a file that is no longer running)."""
        c = _Call(op, args, kwargs, sync, on_void)
        self._calls.put(c)
        return c

    def stop(self, timeout: float = 10.0) -> None:
        self._calls.put(None)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            first = self._calls.get()
            if first is None:
                return
            calls, stop = [first], False
            while len(calls) < self.batch:
                try:
                    c = self._calls.get_nowait()
                except queue.Empty:
                    break
                if c is None:
                    stop = True
                    break
                calls.append(c)
            self._sync(calls)
            self._record(calls)
            for c in calls:
                c.done.set()
            if stop:
                return

    def _record(self, calls: list[_Call], attempts: int = 3) -> None:
        for attempt in range(1, attempts + 1):
            try:
                results = self.store.record([(c.op, c.args, c.kwargs) for c in calls])
            except Exception as exc:
                if attempt < attempts:
                    log.warning("recording %d result(s) failed (%s); trying again", len(calls), exc)
                    time.sleep(0.5 * attempt)
                    continue
                log.exception("recording %d result(s) failed", len(calls))
                for c in calls:
                    c.error = exc  # a waiting worker hears of it
                # nobody waits for a finish: its file goes back to the queue rather than
                # staying ACTIVE until the next restart (the copy is redone, or found committed)
                orphans = [c.args[0] for c in calls if c.op == "finish"]
                try:
                    self.store.release(orphans)
                except Exception:
                    log.exception("files %s stay ACTIVE until the service restarts", orphans[:20])
                return
            for c, r in zip(calls, results, strict=True):
                c.result = r
                if c.op == "finish":  # (the state after _sync, which may have failed it)
                    self.totals.ended(c.args[1], r)
                    if r is None and c.on_void is not None:
                        c.on_void()
            if self.on_promoted is not None and any(getattr(r, "promoted", False) for r in results):
                self.on_promoted()
            return

    @staticmethod
    def _sync(calls: list[_Call]) -> None:
        paths = {c.sync for c in calls if c.sync}
        if not paths:
            return
        try:
            sync_file_systems(sorted(paths))
        except OSError as exc:
            # not durable: those copies failed (FTS retries them when it may)
            reason = f"DESTINATION [{exc.errno or 5}] sync of {exc.filename or 'the destination'} failed: {exc.strerror or exc}"
            for c in calls:
                if c.sync and c.op == "finish":
                    c.args = (c.args[0], "FAILED")
                    c.kwargs = {**{k: v for k, v in c.kwargs.items() if k not in ("filesize", "checksum")},
                                "reason": reason, "recoverable": True}
            log.error("%s", reason)


class Executor:
    def __init__(self, store: JobStore, scheduler: Scheduler, settings: ExecutorSettings):
        self.store = store
        self.scheduler = scheduler
        self.settings = settings
        self._tasks: queue.Queue[CopyTask | None] = queue.Queue()
        self._running: dict[int, tuple[str, str]] = {}
        self._interrupts: set[int] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._recorder: GroupRecorder | None = None
        self._next_expiry = 0.0
        self._dispatching = threading.Lock()
        #: set by the periodic expiry work: the cleanup thread sweeps the scratch copies due
        self._sweep = threading.Event()
        self.totals = CopyTotals()

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._recorder = GroupRecorder(self.store, on_promoted=self.wake, totals=self.totals)
        for i in range(self.settings.workers):
            t = threading.Thread(target=self._worker, name=f"fts-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        dispatcher = threading.Thread(target=self._dispatch_loop, name="fts-dispatcher", daemon=True)
        dispatcher.start()
        self._threads.append(dispatcher)
        if not self.settings.simulate:  # (a simulation writes nothing, so it has nothing to remove)
            # deletions wait on storages: a thread of their own, so no copy waits for them
            cleaner = threading.Thread(target=self._cleanup_loop, name="fts-cleanup", daemon=True)
            cleaner.start()
            self._threads.append(cleaner)

    def stop(self, timeout: float = 10.0) -> None:
        """Interrupt the copies (their checkpoints stay) and put their files back in the queue."""
        self._stopping.set()
        self._wake.set()
        self._sweep.set()
        for _ in range(self.settings.workers):
            self._tasks.put(None)
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            left = list(self._running)
        if self._recorder is not None:
            self._recorder.stop()
        # Copies stuck in I/O past the timeout: queued again for the next start.
        self.store.release(left)

    def wake(self) -> None:
        self._wake.set()

    def interrupt(self, file_ids: list[int]) -> None:
        """Stop the copies of files that were canceled or expired (the database already says so)."""
        with self._lock:
            self._interrupts.update(f for f in file_ids if f in self._running)

    def running(self) -> int:
        with self._lock:
            return len(self._running)

    # -- dispatching --------------------------------------------------------------------

    def _dispatch_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.settings.poll_seconds)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                if time.monotonic() >= self._next_expiry:
                    # a scan of the jobs: once per poll, not once per finished copy
                    self._next_expiry = time.monotonic() + self.settings.poll_seconds
                    self.interrupt(self.store.expire_overdue())
                    self._sweep.set()
                self.dispatch()
            except Exception:  # keep dispatching; the database may be busy for a moment
                log.exception("scheduling round failed")
                time.sleep(self.settings.poll_seconds)

    def dispatch(self) -> int:
        """One scheduling round; returns how many copies it started. Rounds run one at a time
        (the dispatcher thread's and the workers' own)."""
        with self._dispatching:
            return self._dispatch()

    def _dispatch(self) -> int:
        if self.settings.simulate:
            done = self.store.simulate(self.settings.scan)
            if done == self.settings.scan:
                self._wake.set()  # more are waiting
            return done
        with self._lock:
            running = Running.of(self._running.values())
        free = self.settings.workers - running.total
        if free <= 0:
            return 0
        # Read a few candidates per free slot; read more only when saturated links refused
        # too many of them (a full scan per finished file would cost more than small copies).
        limit = min(self.settings.scan, max(64, free * 16))
        while True:
            queued = self.store.queued(limit=limit)
            chosen = self.scheduler.select(queued, running)[:free]
            if len(chosen) >= free or len(queued) < limit or limit >= self.settings.scan:
                break
            limit = min(self.settings.scan, limit * 4)
        if not chosen:
            return 0
        links = {c.file_id: c.link for c in chosen}
        tasks = self.store.claim(list(links))
        with self._lock:
            for task in tasks:
                self._running[task.file_id] = links[task.file_id]
        for task in tasks:
            self._tasks.put(task)
        return len(tasks)

    # -- multihop scratch copies ----------------------------------------------------------

    def _cleanup_loop(self) -> None:
        while not self._stopping.is_set():
            self._sweep.wait()
            self._sweep.clear()
            if self._stopping.is_set():
                return
            try:
                self.sweep_cleanup()
            except Exception:  # the entries stay; the next sweep tries again
                log.exception("removing scratch copies failed")

    def sweep_cleanup(self) -> int:
        """Delete the multihop scratch copies that are due and unused (best effort: a failure
        is logged and tried again later). Returns how many were removed."""
        removed = 0
        while not self._stopping.is_set():
            due = self.store.due_cleanup()
            if not due:
                return removed
            done = []
            for cleanup_id, url in due:
                try:
                    existed = delete(url, timeout=min(self.settings.io_timeout, 30.0), roots=self.settings.roots)
                except CopyError as exc:
                    again = self.store.cleanup_failed(cleanup_id)
                    log.warning("scratch copy %s not removed: %s%s", url, exc.reason,
                                "; trying again later" if again else "; given up")
                    continue
                done.append(cleanup_id)
                if existed:
                    removed += 1
                    log.info("scratch copy of a multihop job removed: %s", url)
            self.store.cleanup_done(done)
        return removed

    # -- copying ------------------------------------------------------------------------

    def _worker(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            try:
                with log_context(fts_job=task.job_id):  # every line about this copy names its job
                    self._run(task)
            except Exception:
                log.exception("file %d: unexpected failure while recording its result", task.file_id,
                              extra={"fts_job": task.job_id})
            finally:
                with self._lock:
                    self._running.pop(task.file_id, None)
                    self._interrupts.discard(task.file_id)
                if self.settings.simulate or self._stopping.is_set():
                    self._wake.set()
                else:
                    # fill the freed slot now, from this thread: handing that to the
                    # dispatcher thread and waiting for it kept workers idle between small files
                    try:
                        self.dispatch()
                    except Exception:
                        log.exception("scheduling after file %d failed; the dispatcher retries", task.file_id)
                        self._wake.set()

    def _progress_hook(self, task: CopyTask):
        s = self.settings
        last = {"time": time.monotonic(), "bytes": task.transferred}

        def on_progress(written: int, dst: Destination) -> None:
            if task.file_id in self._interrupts:
                raise Interrupted(canceled=True)
            if self._stopping.is_set():
                raise Interrupted(canceled=False)
            now = time.monotonic()
            if dst.resumable and (now - last["time"] >= s.checkpoint_seconds or written - last["bytes"] >= s.checkpoint_bytes):
                dst.sync()
                self.store.checkpoint(task.file_id, written)
                last["time"], last["bytes"] = now, written

        return on_progress

    def _record(self, op: str, *args, **kwargs):
        if self._recorder is None:  # not started (tests driving a worker directly)
            result = getattr(self.store, op)(*args, **kwargs)
            if op == "finish":
                self.totals.ended(args[1], result)
            return result
        return self._recorder.call(op, *args, **kwargs)

    def _run(self, task: CopyTask) -> None:
        with self._lock:
            if task.file_id in self._interrupts:
                return  # canceled between the claim and now
        if task.transferred:
            log.info("file %d (job %s): resuming from byte %d", task.file_id, task.job_id, task.transferred)
        try:
            result = run_copy(
                task,
                buffer_size=self.settings.buffer_size,
                timeout=self.settings.io_timeout,
                on_progress=self._progress_hook(task),
                on_commit=lambda size: self._record("checkpoint", task.file_id, size, committing=True),
                durable=self.settings.durable,
                roots=self.settings.roots,
                reread_destination=self.settings.reread_destination,
                # with the recorder, durability is one sync per batch of finished copies
                sync_later=self._recorder is not None,
            )
        except Exception as exc:
            self._failed(task, exc)
            return
        self.totals.copied(0 if result.reused else result.filesize - result.resumed_from)
        if self._recorder is None:
            if result.needs_sync:
                sync_file_systems([result.needs_sync])
            done = self._record("finish", task.file_id, "FINISHED", filesize=result.filesize, checksum=result.checksum,
                                reused=result.reused)
            if done is None and not result.reused:
                self._void(task)
            elif done.promoted:
                self._wake.set()  # a multihop job's next hop is queued now
        else:
            # recorded (after the sync) while this worker starts its next copy
            # a reused copy was not written by this copy: a cancel meanwhile leaves it there
            void = None if result.reused else (
                lambda: threading.Thread(target=self._void, args=(task,), daemon=True).start())
            self._recorder.submit("finish", task.file_id, "FINISHED", filesize=result.filesize,
                                  checksum=result.checksum, sync=result.needs_sync, reused=result.reused,
                                  on_void=void)
        if result.reused:
            log.info("file %d (job %s): reused the copy already at %s (%d bytes, %s verified); 0 bytes copied",
                     task.file_id, task.job_id, task.destination, result.filesize, result.checksum)
        else:
            log.info("file %d (job %s) copied: %d bytes%s", task.file_id, task.job_id, result.filesize,
                     f", resumed at {result.resumed_from}" if result.resumed_from else "")

    def _void(self, task: CopyTask) -> None:
        """The copy reached its destination, but the file was canceled (or expired) before
        that was recorded: the file is CANCELED, so its destination must not stay behind
        (a killed transfer whose file is there anyway is what users are told cannot happen).
        The copy put it there (a destination that existed and was not to be overwritten
        would have failed the copy), so it is this copy's to remove."""
        try:
            removed = delete(task.destination, roots=self.settings.roots)
        except CopyError as exc:
            log.warning("file %d (job %s): canceled while its copy finished; its destination %s could not be "
                        "removed: %s", task.file_id, task.job_id, task.destination, exc.reason)
            return
        if removed:
            log.info("file %d (job %s): canceled while its copy finished; the destination was removed",
                     task.file_id, task.job_id)

    def _failed(self, task: CopyTask, exc: Exception) -> None:
        with self._lock:
            canceled = task.file_id in self._interrupts
        if canceled or (isinstance(exc, Interrupted) and exc.canceled):
            discard_partial(task, roots=self.settings.roots)
            log.info("file %d (job %s): copy stopped, the file was canceled", task.file_id, task.job_id)
            return
        if isinstance(exc, Interrupted):
            self.store.release([task.file_id])
            return
        if isinstance(exc, CopyError):
            reason, recoverable = exc.reason, exc.recoverable
        else:
            log.exception("file %d (job %s): copy failed unexpectedly", task.file_id, task.job_id)
            reason, recoverable = f"TRANSFER [5] {type(exc).__name__}: {exc}", True
        done = self._record("finish", task.file_id, "FAILED", reason=reason, recoverable=recoverable,
                            default_retry=self.settings.default_retry)
        if done is None:
            discard_partial(task, roots=self.settings.roots)
            return
        if not done.retried:
            discard_partial(task, roots=self.settings.roots)
        log.info("file %d (job %s) %s: %s", task.file_id, task.job_id,
                 "will be retried" if done.retried else "FAILED", reason)
        if done.retried:
            self._wake.set()
