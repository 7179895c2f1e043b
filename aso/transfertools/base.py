"""What every transfer tool offers the transfer pipeline.

A tool is bound to one endpoint and one user's credential: ``delegate`` it, ``submit``
chunks of transfers (idempotently, keyed by a submission id), ``bulk_query`` many jobs in a
few requests, ``cancel`` jobs or some of their files (a multihop job only whole). Jobs a
tool no longer knows come back as ``LOST`` results, never as exceptions, so one unknown job
cannot hide the others.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aso.errors import AsoError

JOB_TERMINAL = ("FINISHED", "FINISHEDDIRTY", "FAILED", "CANCELED", "LOST")
FILE_TERMINAL = ("FINISHED", "FAILED", "CANCELED")
#: the metadata keys of a multi-hop row's transfers: the hop's place in the path (1 first)
#: and the number of hops; a tool folds the hops back into one result per row with them
HOP_KEY = "hop"
HOPS_KEY = "hops"


class TransferToolError(AsoError):
    """A tool call failed. ``transient``: worth retrying later (service down, 5xx, timeout)."""

    def __init__(self, message: str, transient: bool = True, status: int | None = None):
        super().__init__(message)
        self.transient = transient
        self.status = status


@dataclass(frozen=True)
class Transfer:
    """One file to move: ``id`` is the state backend's row id, carried as file metadata."""

    id: str
    source: str
    destination: str
    filesize: int | None = None
    #: adler32 as 8 hex digits, or None to let the tool compute and compare
    checksum: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobOptions:
    verify_checksum: str = "both"
    overwrite: bool = True
    retry: int = 3
    retry_delay: int = 600
    #: hours
    max_time_in_queue: int = 10
    priority: int = 3
    metadata: dict[str, Any] = field(default_factory=dict)
    #: seconds FTS may take to bring the source online from tape (FTS3's bring_online;
    #: 0 or less: not sent, a disk source)
    bring_online: int = 0
    #: seconds the staged file stays pinned (FTS3's copy_pin_lifetime; 0 or less: not sent)
    copy_pin_lifetime: int = 0


@dataclass(frozen=True)
class FileResult:
    #: the row id from the file's metadata (None if the job was not submitted by aso)
    transfer_id: str | None
    state: str
    reason: str | None
    source: str | None = None
    destination: str | None = None
    file_id: int | None = None

    @property
    def terminal(self) -> bool:
        return self.state in FILE_TERMINAL


@dataclass(frozen=True)
class JobResult:
    job_id: str
    #: the tool's job state, or LOST when the tool does not know the job
    state: str
    reason: str | None
    #: one result per row: a multihop job's hops are folded into one
    files: tuple[FileResult, ...] = ()
    #: a multihop job: it is canceled whole, never file by file
    multihop: bool = False
    #: the state of the files of a terminal job that ``files`` does not list (None: unknown,
    #: they count as unfinished). A tool that lists only some files (Globus lists the files
    #: it copied and those it skipped on error, not those a sync found in place) says so here.
    unlisted: str | None = None

    @property
    def terminal(self) -> bool:
        return self.state in JOB_TERMINAL

    @property
    def staging(self) -> bool:
        """Files of the job are still being brought online from tape: FTS itself fails them
        once the job's bring_online has passed, so the wait is not the monitor's to judge."""
        return self.state == "STAGING" or any(f.state == "STAGING" for f in self.files)


class TransferTool(ABC):
    name: str = "tool"
    endpoint: str = ""

    @abstractmethod
    def delegate(self, lifetime: dt.timedelta, renew_below: dt.timedelta) -> str | None:
        """Make sure the service holds a delegated credential with at least ``renew_below``
        left, delegating ``lifetime`` when not. Returns the delegation id, or None when the
        service needs no delegation."""

    @abstractmethod
    def expected_job_id(self, sid: str) -> str:
        """The job id a submission with ``sid`` gets (known before submitting)."""

    @abstractmethod
    def submit(self, transfers: Sequence[Transfer], options: JobOptions, sid: str, *, multihop: bool = False) -> str:
        """Submit one job; submitting the same ``sid`` again returns the same job id and
        creates nothing. ``multihop``: the transfers are the hops of one file's path, in
        order (each hop's destination is the next one's source), run one after the other."""

    @abstractmethod
    def bulk_query(self, job_ids: Sequence[str]) -> dict[str, JobResult]:
        """Status of every job asked for, with one result per row id; unknown jobs are
        LOST."""

    @abstractmethod
    def cancel(self, job_id: str, file_ids: Sequence[int] | None = None) -> None:
        """Cancel a job (``file_ids`` None), or some of its files; an empty ``file_ids``
        cancels nothing."""

    def close(self) -> None:  # noqa: B027 - optional
        pass
