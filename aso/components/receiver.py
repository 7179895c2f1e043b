"""``aso receiver``: FTS3's completion messages from STOMP brokers, handed to the reporter.

Rucio's receiver path. FTS publishes a completion message when a transfer attempt ends; the
receiver keeps those of this installation (``job_metadata.issuer`` ASO and this
``instance``, and the configured VO), drops the attempts FTS will retry itself (and the
hops of a multihop job that do not end its row: :meth:`Completion.is_final`), and turns
the rest into the same reporter hand-off the monitor writes, in batches: per batch, one
reporter entry per user (durable) and then the monitor entries' record of what was handed
over (atomic, not fsynced: losing that record only lets the monitor report a file again,
which the reporter's guard turns into nothing). Everything is done under the user's sandbox
lock, which the monitor takes too, so the two never hand over the same file.

A message is acknowledged (STOMP ``client`` mode, cumulatively) only after its batch was
handed over; a receiver killed mid-batch gets the unacknowledged messages again from a
durable subscription, and without one the monitor's poll finds those files. A message for a
job without a monitor entry yet (FTS finished before ``aso transfer`` wrote it) is kept for
``early_seconds`` and tried again at every batch. A message for a job the monitor already
handed over, or one seen twice, changes nothing; a malformed one is logged and dropped.

The connections: one per address behind each broker alias, reconnected with a back-off
(0.5 s doubling to 30 s) when a broker goes away. SIGTERM ends the run after the batch at
hand. Every ``log_seconds`` a line gives messages/s, what was handed over and the lag (from
FTS's ``tr_timestamp_complete`` to the hand-off).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from aso.components.handoffs import MonitorEntry, ReportedFile, ReporterEntry
from aso.components.pipeline import PipelineSettings
from aso.errors import ValidationError
from aso.logs import log_context
from aso.messaging import fts3 as msg
from aso.messaging.durable import broker_kind, subscription_headers
from aso.messaging.stomp_link import BrokerAddress, LinkError, StompLink, resolve
from aso.sandbox import Entry

log = logging.getLogger("aso.receiver")

#: how many finished jobs the receiver remembers (for duplicates; a few MB)
FINISHED_JOBS_KEPT = 100_000
#: lags kept between two log lines (their p50 and max are logged; a bounded sample)
MAX_LAGS_KEPT = 100_000


@dataclass
class ReceiverSettings:
    brokers: tuple[str, ...]
    user: str = ""
    password: str = ""
    vhost: str = "/"
    topic: str = msg.COMPLETE_TOPIC
    use_topics: bool = True
    #: '' = any VO
    vo: str = ""
    #: '' = a plain subscription
    subscription: str = ""
    issuer: str = "ASO"
    instance: str = "prod"
    batch_size: int = 1000
    batch_seconds: float = 0.2
    early_seconds: float = 120.0
    log_seconds: float = 60.0
    max_backoff: float = 30.0

    @classmethod
    def from_config(cls, config) -> ReceiverSettings:
        r = config.receiver
        return cls(brokers=tuple(str(b) for b in r.brokers), user=r.user, password=r.password, vhost=r.vhost,
                   topic=r.topic, use_topics=r.use_topics, vo=r.vo, subscription=r.subscription,
                   instance=config.aso.instance, batch_size=r.batch_size, batch_seconds=r.batch_seconds,
                   early_seconds=r.early_seconds)


@dataclass
class ReceiverSummary:
    received: int = 0
    handed_over: Counter = field(default_factory=Counter)
    #: another installation's, VO's or issuer's
    foreign: int = 0
    #: attempts FTS retries itself (and multi-replica steps): the file is not done yet
    not_final: int = 0
    #: already handed over (by the monitor or an earlier message), or seen twice
    duplicates: int = 0
    #: no monitor entry appeared within early_seconds (a job the monitor finished and removed)
    unknown_job: int = 0
    malformed: int = 0
    batches: int = 0
    errors: list[str] = field(default_factory=list)

    def files_handled(self) -> int:
        return sum(self.handed_over.values())

    def as_dict(self) -> dict:
        data = asdict(self)
        data["handed_over"] = dict(self.handed_over)
        return data

    def line(self) -> str:
        handed = ", ".join(f"{n} {s}" for s, n in sorted(self.handed_over.items())) or "none"
        return (f"receiver: {self.received} message(s) in {self.batches} batch(es); handed to the reporter: {handed}; "
                f"{self.duplicates} already handed over, {self.not_final} FTS retries itself, {self.foreign} not ours, "
                f"{self.unknown_job} for unknown jobs, {self.malformed} malformed")


@dataclass
class _Waiting:
    completion: msg.Completion
    since: float


class Receiver:
    """The library under ``aso receiver``: :meth:`hand_over` is one batch (tests call it
    with message bodies directly), :meth:`run` the connections and the loop."""

    def __init__(self, settings: ReceiverSettings, pipeline: PipelineSettings, now: Callable[[], float] = time.time):
        self.settings = settings
        self.pipeline = pipeline
        self.now = now
        self.monitor_box = pipeline.sandbox("monitor")
        self.reporter_box = pipeline.sandbox("reporter")
        self.summary = ReceiverSummary()
        self._early: dict[tuple[str, str, str], _Waiting] = {}
        #: jobs whose every file this receiver handed over (their monitor entries are gone):
        #: a late copy of one of their messages is a duplicate at once, not an early message
        self._finished_jobs: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()
        self._lags: list[float] = []
        self._seq = 0
        # filled by the connections' threads, emptied by the main loop
        self._inbox: collections.deque[tuple[int, str, str]] = collections.deque()
        self._arrived = threading.Condition()

    # -- one batch ------------------------------------------------------------------------

    def hand_over(self, bodies: Sequence[str | bytes]) -> int:
        """Hand the completions among these message bodies to the reporter (and retry the
        early ones); returns how many files were handed over."""
        s = self.summary
        s.batches += 1
        fresh: list[msg.Completion] = []
        for body in bodies:
            s.received += 1
            try:
                c = msg.Completion.from_message(body)
            except msg.MessageError as exc:
                s.malformed += 1
                log.warning("malformed message dropped: %s", exc)
                continue
            if not c.is_for(self.settings.issuer, self.settings.instance, self.settings.vo or None):
                s.foreign += 1
                continue
            if not c.is_final():
                s.not_final += 1
                continue
            if not c.row_id or not c.user:
                s.malformed += 1
                log.warning("message for FTS job %s file %s dropped: it names no %s", c.job_id, c.file_id,
                            "row id (file_metadata.oracleId)" if not c.row_id else "user (job_metadata.user)",
                            extra={"fts_job": c.job_id, "user": c.user or None})
                continue
            fresh.append(c)
        now = self.now()
        # every message waits in _early until its monitor entry is found (at once, mostly)
        todo = [w.completion for w in self._early.values()]
        for c in fresh:
            key = (c.user, c.job_id, c.row_id)
            if key in self._early or (c.user, c.job_id) in self._finished_jobs:
                s.duplicates += 1  # seen twice before it could be handed over
                continue
            self._early[key] = _Waiting(c, now)
            todo.append(c)
        by_user: dict[str, list[msg.Completion]] = collections.defaultdict(list)
        for c in todo:
            by_user[c.user].append(c)
        handed = 0
        for user, completions in sorted(by_user.items()):
            try:
                with log_context(user=user):
                    handed += self._hand_over_user(user, completions, now)
            except ValidationError as exc:
                s.malformed += len(completions)
                for c in completions:
                    self._early.pop((c.user, c.job_id, c.row_id), None)
                log.warning("messages for user %r dropped: %s", user[:100], exc, extra={"user": user[:100]})
        for key, waiting in list(self._early.items()):
            if now - waiting.since > self.settings.early_seconds:
                del self._early[key]
                s.unknown_job += 1
                log.info("FTS job %s of user %s: no monitor entry after %.0f s; the message is dropped (the job "
                         "was handed over by the monitor already, or was not submitted from here)",
                         key[1], key[0], self.settings.early_seconds, extra={"user": key[0], "fts_job": key[1]})
        if handed:
            log.debug("receiver: handed %d file(s) of %d user(s) to the reporter (%d message(s) in this batch)",
                      handed, len(by_user), len(bodies))
        return handed

    def _hand_over_user(self, user: str, completions: list[msg.Completion], now: float) -> int:
        s = self.summary
        by_job: dict[str, list[msg.Completion]] = collections.defaultdict(list)
        for c in completions:
            by_job[c.job_id].append(c)
        with self.monitor_box.user_lock(user):
            jobs: dict[str, tuple[Entry, MonitorEntry]] = {}
            files: list[ReportedFile] = []
            seen: set[tuple[str, str]] = set()
            for job_id, items in by_job.items():
                try:
                    entry = self.monitor_box.entry(user, job_id)
                except ValidationError:
                    entry = None  # not a name a monitor entry can have: not ours
                job = self.monitor_box.load_record(entry) if entry is not None else None
                if job is None:
                    continue  # not written yet (stays early) or gone (times out of early)
                reported = set(job.reported)
                for c in items:
                    self._early.pop((user, job_id, c.row_id), None)
                    if c.row_id not in job.files or c.row_id in reported or (job_id, c.row_id) in seen:
                        s.duplicates += 1
                        continue
                    seen.add((job_id, c.row_id))
                    files.append(ReportedFile(c.row_id, c.file_state, c.reason or None, job_id))
                    s.handed_over[c.file_state] += 1
                    if c.completed and len(self._lags) < MAX_LAGS_KEPT:
                        self._lags.append(max(0.0, now - c.completed))
                jobs[job_id] = (entry, job)
            if not files:
                return 0
            self._seq += 1
            name = f"recv-{time.time_ns()}-{self._seq}"
            self.reporter_box.write_record(user, name, ReporterEntry(None, files, user, None))
            handed = {(f.job_id, f.id) for f in files}
            for job_id, (entry, job) in jobs.items():
                mine = [row for j, row in handed if j == job_id]
                if mine:  # per job, at DEBUG: the receiver's part of a file's trail
                    log.debug("user %s: FTS job %s: %d file(s) handed to the reporter", user, job_id, len(mine),
                              extra={"fts_job": job_id})
                job.last_news = now
                if mine:
                    job.hand_over(mine, now)
                if job.complete:
                    self.monitor_box.remove(user, entry.name)
                    self._finished_jobs[(user, job_id)] = None
                    if len(self._finished_jobs) > FINISHED_JOBS_KEPT:
                        self._finished_jobs.popitem(last=False)
                else:
                    self.monitor_box.write_record(user, entry.name, job, durable=False)
        return len(files)

    # -- connections and the loop ---------------------------------------------------------

    def _on_message(self, link_index: int, headers: dict, body: str) -> None:
        with self._arrived:
            self._inbox.append((link_index, headers.get("ack") or headers.get("message-id", ""), body))
            if len(self._inbox) >= self.settings.batch_size:
                self._arrived.notify()

    def _subscribe(self, link: StompLink) -> None:
        dest = msg.destination(self.settings.topic, self.settings.use_topics)
        headers: dict[str, str] = {}
        if self.settings.subscription:
            _, headers = subscription_headers(broker_kind(link.server), self.settings.subscription)
        prefetch = str(self.settings.batch_size * 2)
        headers = {**headers, "prefetch-count": prefetch, "activemq.prefetchSize": prefetch}
        link.subscribe(dest, headers.pop("id", "aso-receiver"), ack="client", headers=headers)
        log.info("subscribed to %s on %s (%s)%s", dest, link.address, link.server or "unknown broker",
                 f", durable subscription {self.settings.subscription!r}" if self.settings.subscription else "")

    def run(self, stop: threading.Event, seconds: float | None = None) -> ReceiverSummary:
        """Receive until ``stop`` is set (or ``seconds`` passed); returns the summary."""
        st = self.settings
        addresses: list[BrokerAddress] = resolve(st.brokers)
        # before CONNECTED the broker is unknown: the connect headers of every kind
        connect_headers = subscription_headers(None, st.subscription)[0] if st.subscription else {}
        links = [StompLink(a, st.user, st.password, vhost=st.vhost, connect_headers=connect_headers,
                           on_message=lambda h, b, i=i: self._on_message(i, h, b))
                 for i, a in enumerate(addresses)]
        next_try = [0.0] * len(links)
        backoff = [0.5] * len(links)
        deadline = None if seconds is None else time.monotonic() + seconds
        last_log, count_at_log = time.monotonic(), 0
        try:
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                for i, link in enumerate(links):
                    if link.is_connected() or time.monotonic() < next_try[i]:
                        continue
                    try:
                        link.connect()
                        self._subscribe(link)
                        backoff[i] = 0.5
                    except LinkError as exc:
                        link.close()
                        next_try[i] = time.monotonic() + backoff[i]
                        log.warning("%s; next try in %.1f s", exc, backoff[i])
                        backoff[i] = min(st.max_backoff, backoff[i] * 2)
                self._one_batch(links, stop)
                if time.monotonic() - last_log >= st.log_seconds:
                    self._log_rate(time.monotonic() - last_log, self.summary.received - count_at_log)
                    last_log, count_at_log = time.monotonic(), self.summary.received
            self._one_batch(links, None)  # what arrived before the stop
        finally:
            for link in links:
                link.close()
        self._log_rate(max(1e-9, time.monotonic() - last_log), self.summary.received - count_at_log)
        return self.summary

    def _one_batch(self, links: list[StompLink], stop: threading.Event | None) -> None:
        st = self.settings
        with self._arrived:
            if stop is not None and len(self._inbox) < st.batch_size:
                self._arrived.wait(st.batch_seconds)
            batch = [self._inbox.popleft() for _ in range(min(st.batch_size, len(self._inbox)))]
        if not batch and not self._early:
            return
        self.hand_over([body for _, _, body in batch])
        last: dict[int, str] = {}
        for index, ack_id, _ in batch:
            last[index] = ack_id
        for index, ack_id in last.items():
            try:
                links[index].ack(ack_id)  # client mode: this one and every one before it
            except Exception as exc:  # the connection broke: the broker sends them again
                log.warning("acknowledgement to %s failed: %s", links[index].address, exc)

    def _log_rate(self, elapsed: float, count: int) -> None:
        lags = sorted(self._lags)
        self._lags = []
        lag = (f"lag p50 {lags[len(lags) // 2]:.2f} s, max {lags[-1]:.2f} s" if lags else "no lag measured")
        log.info("receiver: %.0f message(s)/s over %.0f s; %s; %s", count / elapsed, elapsed, lag, self.summary.line())
