"""FTS3's monitoring messages from the embedded service: a durable outbox and its sender.

When a file's state changes, the message saying so is written into ``t_outbox`` in the same
transaction as the change, so no message is lost to a crash and none exists for a change
that did not happen. A sender thread sends the outbox in order, one receipt per batch, and
deletes what the broker confirmed: a broker that is down only lets the outbox grow (copies
neither stop nor slow down), and the messages go out when it is back. After a restart the
outbox holds only what was never confirmed; a kill between the broker's receipt and the
delete (a few milliseconds) sends that batch again, which consumers must tolerate (aso's
receiver does). Messages older than FTS3's 24 h time-to-live are dropped, with a warning.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from aso.messaging import fts3 as msg
from aso.messaging.stomp_link import LinkError, StompLink, resolve

log = logging.getLogger("aso.fts.messages")

OUTBOX_SCHEMA = """
CREATE TABLE IF NOT EXISTS t_outbox (
    msg_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    destination TEXT NOT NULL,
    body        TEXT NOT NULL,
    created     REAL NOT NULL
);
"""


@dataclass
class MessageSettings:
    """``[fts_server] stomp_*``: where and what the service publishes."""

    brokers: tuple[str, ...]
    user: str = ""
    password: str = ""
    complete_topic: str = msg.COMPLETE_TOPIC
    #: '' sends no state messages
    state_topic: str = msg.STATE_TOPIC
    use_topics: bool = True
    #: the VO the messages name ('' = the job's VO, which without VOMS is the delegation id)
    vo: str = ""
    #: the service's own URL, ``endpnt`` in every message (FTS3's ``Alias``)
    endpoint: str = ""
    #: retries for jobs submitted with retry 0 (the executor's setting; ``retry_max``)
    default_retry: int = 0
    batch: int = 500


#: an event for one file: (file_id, outcome, retried). ``outcome`` is how an attempt ended
#: (FINISHED, FAILED, CANCELED) or None for a state change that ends nothing (submitted,
#: started); ``retried``: the failed attempt will be retried (the file is queued again)
Event = tuple[int, "str | None", bool]

_ROWS = (
    "SELECT f.file_id, f.job_id, j.job_type, f.source_surl, f.dest_surl, f.source_se, f.dest_se, f.vo_name,"
    " j.user_dn, f.activity, f.reason, f.recoverable, f.retry, j.retry AS job_retry, f.start_time, f.finish_time,"
    " f.filesize, f.user_filesize, f.checksum, f.file_metadata, j.job_metadata, j.submit_time, j.job_state,"
    " f.file_state, f.file_index, j.hop_count, f.staging_start, f.staging_finished FROM t_file f JOIN t_job j USING (job_id) WHERE f.file_id IN ({marks})"
)


def queue_messages(conn: sqlite3.Connection, settings: MessageSettings, events: Iterable[Event], now: float) -> int:
    """Write the messages for these events into the outbox, inside the caller's transaction
    (one read and one bulk insert for all of them). Returns how many were written."""
    import json

    events = list(events)
    if not events:
        return 0
    by_id = {file_id: (outcome, retried) for file_id, outcome, retried in events}
    rows: list[sqlite3.Row] = []
    ids = list(by_id)
    for i in range(0, len(ids), 900):  # SQLite's bound-parameter limit
        part = ids[i:i + 900]
        rows += conn.execute(_ROWS.format(marks=",".join("?" * len(part))), part).fetchall()
    complete = msg.destination(settings.complete_topic, settings.use_topics)
    state = msg.destination(settings.state_topic, settings.use_topics) if settings.state_topic else None
    out: list[tuple[str, str, float]] = []
    for r in rows:
        outcome, retried = by_id[r["file_id"]]
        job_retry = r["job_retry"]
        retry_max = job_retry if job_retry > 0 else (settings.default_retry if job_retry == 0 else 0)
        f = msg.FileOutcome(
            file_id=r["file_id"], job_id=r["job_id"], job_type=r["job_type"], source=r["source_surl"],
            destination=r["dest_surl"], source_se=r["source_se"], dest_se=r["dest_se"], vo_name=r["vo_name"],
            user_dn=r["user_dn"], activity=r["activity"], outcome=outcome or r["file_state"], reason=r["reason"],
            recoverable=bool(r["recoverable"]),
            # the message is about the attempt that ended, before the retry counter moved on
            retry=r["retry"] - 1 if retried else r["retry"], retry_max=retry_max,
            start_time=r["start_time"], finish_time=r["finish_time"] or now, filesize=r["filesize"],
            user_filesize=r["user_filesize"], checksum=r["checksum"], file_metadata=json.loads(r["file_metadata"]),
            job_metadata=json.loads(r["job_metadata"]), submit_time=r["submit_time"], job_state=r["job_state"],
            file_state=r["file_state"],
            last_hop=r["hop_count"] is None or r["file_index"] == r["hop_count"] - 1, retried=retried,
            staging_start=r["staging_start"], staging_finished=r["staging_finished"],
        )
        if outcome is not None:
            out.append((complete, msg.encode(msg.completion_body(f, settings.endpoint, settings.vo or None)), now))
        if state is not None:
            out.append((state, msg.encode(msg.state_body(f, settings.vo or None, now)), now))
    conn.executemany("INSERT INTO t_outbox (destination, body, created) VALUES (?, ?, ?)", out)
    return len(out)


class OutboxSender:
    """A thread that sends the outbox to the first broker that answers, in order."""

    def __init__(self, store, settings: MessageSettings, idle_seconds: float = 1.0, max_backoff: float = 30.0):
        self.store = store
        self.settings = settings
        # queued messages set the store's outbox_wake: the idle wait is only a backstop
        self.idle_seconds = idle_seconds
        self._next_expiry = 0.0
        self.max_backoff = max_backoff
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._link: StompLink | None = None
        self.sent = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="fts-messages", daemon=True)
        self._thread.start()
        log.info("messages: completion to %s%s on %s", msg.destination(self.settings.complete_topic, self.settings.use_topics),
                 f", state to {msg.destination(self.settings.state_topic, self.settings.use_topics)}" if self.settings.state_topic else "",
                 ", ".join(self.settings.brokers))

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.store.outbox_wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._link is not None:
            self._link.close()

    def _connect(self) -> StompLink:
        errors = []
        for address in resolve(self.settings.brokers):
            link = StompLink(address, self.settings.user, self.settings.password)
            try:
                link.connect()
            except LinkError as exc:
                errors.append(str(exc))
                continue
            log.info("messages: connected to %s (%s)", address, link.server or "unknown broker")
            return link
        raise LinkError("; ".join(errors) or "no broker configured")

    def _loop(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                if self.send_once() == 0:
                    self.store.outbox_wake.wait(self.idle_seconds)
                    self.store.outbox_wake.clear()
                backoff = 0.5
            except LinkError as exc:
                if self._link is not None:
                    self._link.close()
                    self._link = None
                log.warning("messages: %s; %d waiting in the outbox, next try in %.1f s", exc, self.store.outbox_count(), backoff)
                self._stop.wait(backoff)
                backoff = min(self.max_backoff, backoff * 2)
            except Exception:
                log.exception("messages: sending failed unexpectedly; trying again")
                self._stop.wait(backoff)
                backoff = min(self.max_backoff, backoff * 2)

    def send_once(self) -> int:
        """Send one batch of the outbox; returns how many the broker confirmed."""
        if time.monotonic() >= self._next_expiry:  # a write: once a minute, not once per batch
            self._next_expiry = time.monotonic() + 60
            expired = self.store.outbox_expire(time.time() - msg.MESSAGE_TTL_SECONDS)
            if expired:
                log.warning("messages: %d message(s) older than %d h dropped unsent (their time-to-live is over)",
                            expired, msg.MESSAGE_TTL_SECONDS // 3600)
        rows = self.store.outbox_batch(self.settings.batch)
        if not rows:
            return 0
        if self._link is None or not self._link.is_connected():
            self._link = self._connect()
        batch = [(dest, body, _headers(created)) for _, dest, body, created in rows]
        self._link.send_batch(batch)
        self.store.outbox_delete(rows[-1][0])
        self.sent += len(rows)
        return len(rows)


def _headers(created: float) -> dict:
    # persistent as FTS3's; ActiveMQ reads 'expires' (ms epoch), RabbitMQ 'expiration' (ms TTL)
    ttl_ms = max(1, int((created + msg.MESSAGE_TTL_SECONDS - time.time()) * 1000))
    return {"persistent": "true", "expires": str(int((created + msg.MESSAGE_TTL_SECONDS) * 1000)),
            "expiration": str(ttl_ms), "content-type": "text/plain"}
