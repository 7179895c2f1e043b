"""The embedded FTS service as one object: database, credentials, scheduler, executor, app.

Starting it recovers what a previous run left: files that were being copied go back to the
queue with their checkpoints, so their copies resume where the last durable checkpoint was.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path

from aso.ftsd.credentials_store import CredentialStore
from aso.ftsd.db import JobStore
from aso.ftsd.executor import Executor, ExecutorSettings
from aso.ftsd.identity import Identity, delegation_id
from aso.ftsd.outbox import MessageSettings, OutboxSender
from aso.ftsd.scheduler import default_scheduler
from aso.ftsd.staging import Robot, TapeSettings
from aso.ftsd.urls import normalise_roots

log = logging.getLogger("aso.fts")

DEFAULT_LOCAL_USER = "/DC=local/CN=aso local user"


@dataclass
class ServiceSettings:
    db: Path
    #: copies at once over the whole service
    workers: int = 4
    #: copies at once per link (source storage → destination storage)
    per_link: int = 2
    #: plain-HTTP mode: every caller is this user (None over HTTPS)
    local_user_dn: str | None = None
    host_name: str = field(default_factory=socket.getfqdn)
    #: local folders file:// URLs (sources and destinations) must lie under; none: file://
    #: URLs are refused
    roots: tuple[str, ...] = ()
    executor: ExecutorSettings = field(default_factory=ExecutorSettings)
    #: FTS3's monitoring messages to a STOMP broker (None: none are sent)
    messages: MessageSettings | None = None
    #: seconds a failed or canceled multihop job's scratch copies are kept before they are
    #: deleted (a resubmission may reuse them; Rucio's multihop tombstone is 2 h)
    multihop_cleanup_delay: float = 7200.0
    #: bearer token /metrics requires ('' = open, no client certificate needed either)
    metrics_token: str = ""
    #: seconds the store gauges of /metrics are reused before the files are counted again
    metrics_cache_seconds: float = 10.0
    #: the emulated tape: which folders are on tape and how long recalls take
    tape: TapeSettings = field(default_factory=TapeSettings)


def copy_slots(workers: int = 0, per_link: int = 0, cores: int | None = None) -> tuple[int, int]:
    """(workers, per_link) for the service: what was asked, and for 0 what fits the machine.

    Copies wait on disks and networks far more than on a CPU (checksums and the OS's copies
    release the GIL), so 4 per core, from 4 to 32; a link may use them all, because the
    local-disk case, one link (file:// to file://), is the one a single machine runs."""
    import os

    if workers <= 0:
        workers = min(32, max(4, 4 * (cores or os.cpu_count() or 1)))
    if per_link <= 0:
        per_link = workers
    return workers, per_link


def local_identity(user_dn: str) -> Identity:
    dlg = delegation_id(user_dn)
    return Identity(user_dn=user_dn, vos=(dlg,), delegation_id=dlg, method="unauthenticated")


class FtsService:
    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        settings.executor.workers = settings.workers
        # a file on tape is a file the service reads: tape roots are roots too
        settings.tape = TapeSettings(normalise_roots(settings.tape.roots), settings.tape.delay_min,
                                     settings.tape.delay_max)
        settings.roots = normalise_roots((*settings.roots, *settings.tape.roots))
        settings.executor.roots = settings.roots
        Path(settings.db).parent.mkdir(parents=True, exist_ok=True)
        self.store = JobStore(settings.db, host=settings.host_name)
        self.store.cleanup_delay = settings.multihop_cleanup_delay
        self.store.tape = settings.tape
        self.credentials = CredentialStore(settings.db)
        self.scheduler = default_scheduler(settings.workers, settings.per_link)
        self.executor = Executor(self.store, self.scheduler, settings.executor)
        # staging needs no copy slot: the robot stages files, the executor copies them after
        self.robot = Robot(self.store.staging_sweep, self.executor.wake, settings.executor.poll_seconds)
        self.local_identity = local_identity(settings.local_user_dn) if settings.local_user_dn else None
        self.sender: OutboxSender | None = None
        if settings.messages is not None and settings.messages.brokers:
            settings.messages.default_retry = settings.executor.default_retry
            self.store.messages = settings.messages
            self.sender = OutboxSender(self.store, settings.messages)

    def start(self) -> None:
        recovered = self.store.recover()
        if recovered:
            log.info("recovered %d file(s) that were being copied when the service stopped; they resume from their checkpoints",
                     len(recovered))
        self.executor.start()
        self.executor.wake()
        self.robot.start()  # recalls a previous run left under way go on from the database
        if self.sender is not None:
            waiting = self.store.outbox_count()
            if waiting:
                log.info("messages: %d left unsent by the previous run go out first", waiting)
            self.sender.start()
        log.info("executor: %d workers, scheduler %s", self.settings.workers, self.scheduler.describe())
        if self.settings.roots:
            log.info("file:// URLs allowed under: %s", ", ".join(self.settings.roots))
        if self.settings.tape.roots:
            log.info("tape (nearline until staged, recalls of %g to %g s) under: %s", self.settings.tape.delay_min,
                     self.settings.tape.delay_max, ", ".join(self.settings.tape.roots))
        else:
            log.info("no local roots: file:// URLs are refused (start the service with --root DIR to allow them)")

    def stop(self) -> None:
        self.robot.stop()
        self.executor.stop()
        if self.sender is not None:
            self.sender.stop()
        self.store.close()

    def app(self):
        from aso.ftsd.app import create_app

        return create_app(self)
