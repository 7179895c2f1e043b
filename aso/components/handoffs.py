"""The typed records the components hand each other through the sandboxes.

One record per sandbox kind, and the one definition of that kind's shape:

- :class:`SubmitRecord` (``submit/<user>/<batch>.json``): the transfer component's
  write-ahead record, a user's :class:`Chunk` s about to be submitted;
- :class:`MonitorEntry` (``monitor/<user>/<fts_job_id>.json``): an FTS job to follow, written
  by the transfer component (and the retry manager for orphans), read by the monitor;
- :class:`ReporterEntry` (``reporter/<user>/<job>_<batch>.json``): finished files of one
  job, written by the monitor, read by the reporter; or (``reporter/<user>/recv-....json``)
  finished files of several jobs, each file naming its job, written by the receiver.

``to_json()`` gives exactly the JSON written on disk; ``from_json()`` reads it back (today's
format and the older ones still on disk) or raises :class:`HandoffShapeError` saying what is
wrong, which the sandbox uses to quarantine the entry.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from aso.transfertools.base import Transfer

_TRANSFER_FIELDS = tuple(f.name for f in fields(Transfer))


class HandoffShapeError(ValueError):
    """A sandbox entry does not have the shape of its kind."""


def _is_str(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _object(doc: Any) -> dict:
    if not isinstance(doc, dict):
        raise HandoffShapeError(f"a JSON object was expected, not {type(doc).__name__}")
    return doc


# -- submit/: the write-ahead record ------------------------------------------------------


@dataclass
class Chunk:
    """Files of one link submitted as one FTS job under a submission id (``sid``): the same
    sid always yields the same FTS job id.

    A multi-hop chunk (``path`` set, "A>B>C") is one row: its transfers are the hops in
    order, all carrying the row id, submitted as one FTS multihop job (Rucio's one job per
    multihop path)."""

    sid: str
    endpoint: str
    transfers: list[Transfer]
    #: the sites of a multi-hop path ("A>B>C"); '' for a chunk of direct transfers
    path: str = ""
    #: FTS3's bring_online and copy_pin_lifetime of the job (seconds; 0 or less: not sent):
    #: set for a chunk from a tape site and for stage-in chunks, decided when the chunk is
    #: cut, so a replay submits the job as it was first meant
    bring_online: int = 0
    copy_pin_lifetime: int = 0

    @property
    def multihop(self) -> bool:
        return bool(self.path)

    def ids(self) -> list[str]:
        """The row ids, once each (a multi-hop row has a transfer per hop)."""
        return list(dict.fromkeys(t.id for t in self.transfers))

    def live(self, dead: Iterable[str]) -> list[Transfer]:
        """The transfers still to submit (those not killed)."""
        dead = set(dead)
        return [t for t in self.transfers if t.id not in dead]

    def live_ids(self, dead: Iterable[str]) -> list[str]:
        """The row ids still to submit, once each."""
        return list(dict.fromkeys(t.id for t in self.live(dead)))

    def to_json(self) -> dict:
        doc = {"sid": self.sid, "endpoint": self.endpoint, "transfers": [_transfer_json(t) for t in self.transfers]}
        if self.path:  # only then: a direct chunk is written as before paths existed
            doc["path"] = self.path
        if self.bring_online > 0:  # likewise: a disk chunk is written as before tape existed
            doc["bring_online"] = self.bring_online
            doc["copy_pin_lifetime"] = self.copy_pin_lifetime
        return doc

    @classmethod
    def from_json(cls, doc: Any) -> Chunk:
        if not isinstance(doc, dict) or not _is_str(doc.get("sid")) or not _is_str(doc.get("endpoint")):
            raise HandoffShapeError("every chunk must be an object with a 'sid' and an 'endpoint'")
        transfers = doc.get("transfers")
        if not isinstance(transfers, list):
            raise HandoffShapeError("a chunk's 'transfers' must be a list")
        for t in transfers:
            if not isinstance(t, dict) or not all(_is_str(t.get(k)) for k in ("id", "source", "destination")):
                raise HandoffShapeError("every transfer must be an object with an 'id', a 'source' and a 'destination'")
        path = doc.get("path", "")
        if not isinstance(path, str):
            raise HandoffShapeError("a chunk's 'path' must be a string")
        staging = [doc.get(k, 0) for k in ("bring_online", "copy_pin_lifetime")]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in staging):
            raise HandoffShapeError("a chunk's 'bring_online' and 'copy_pin_lifetime' must be integers")
        return cls(doc["sid"], doc["endpoint"],
                   [Transfer(**{k: t[k] for k in _TRANSFER_FIELDS if k in t}) for t in transfers], path, *staging)


def _transfer_json(t: Transfer) -> dict:
    """A transfer as ``dataclasses.asdict`` writes it (its fields in order; metadata holds
    plain values), without its generic recursion: a write-ahead record holds every file."""
    return {"id": t.id, "source": t.source, "destination": t.destination, "filesize": t.filesize,
            "checksum": t.checksum, "metadata": dict(t.metadata)}


@dataclass
class SubmitRecord:
    """A user's chunks, written before any of them is submitted and removed (or shrunk to
    the chunks still to submit) once their outcome is recorded."""

    user: str | None
    created: int | None
    chunks: list[Chunk]

    def ids(self) -> list[str]:
        return [i for chunk in self.chunks for i in chunk.ids()]

    def to_json(self) -> dict:
        return {"user": self.user, "created": self.created, "chunks": [c.to_json() for c in self.chunks]}

    @classmethod
    def from_json(cls, doc: Any) -> SubmitRecord:
        doc = _object(doc)
        if "chunks" not in doc:  # an older record: one chunk at the top level
            return cls(doc.get("user"), doc.get("created"), [Chunk.from_json(doc)])
        if not isinstance(doc["chunks"], list):
            raise HandoffShapeError("'chunks' must be a list")
        return cls(doc.get("user"), doc.get("created"), [Chunk.from_json(c) for c in doc["chunks"]])


# -- monitor/: an FTS job to follow -------------------------------------------------------


@dataclass
class MonitorEntry:
    """An FTS job and its files (row id -> source and destination), with what was already
    handed to the reporter (``reported``) in how many reporter entries (``batches``)."""

    job_id: str
    endpoint: str
    submitted: float
    files: dict[str, dict[str, Any]]
    reported: list[str] = field(default_factory=list)
    batches: int = 0
    last_progress: float | None = None
    user: str | None = None
    #: when FTS last said something about the job (a message, or a poll that found it
    #: unfinished); with a receiver, the monitor polls only jobs quiet for ``poll_after``
    last_news: float | None = None

    def quiet_since(self) -> float:
        """Since when nothing was heard of the job (submission, progress or news)."""
        return max(self.submitted, self.last_progress or 0, self.last_news or 0)

    def hand_over(self, ids: Iterable[str], now: float) -> None:
        """Record files as handed to the reporter."""
        self.reported = sorted(set(self.reported) | set(ids))
        self.last_progress = now

    @classmethod
    def new(cls, job_id: str, user: str, endpoint: str, now: int,
            transfers: Iterable[Transfer] = ()) -> MonitorEntry:
        """The entry of a submitted job. The hops of a multi-hop row (in order, one id) make
        one file: the first hop's source and the last hop's destination."""
        files: dict[str, dict[str, Any]] = {}
        for t in transfers:
            files.setdefault(t.id, {"source": t.source})["destination"] = t.destination
        return cls(job_id, endpoint, now, files, [], 0, now, user)

    def ids(self) -> list[str]:
        return list(self.files)

    def unreported(self) -> list[str]:
        reported = set(self.reported)
        return [i for i in self.files if i not in reported]

    @property
    def complete(self) -> bool:
        return set(self.reported) >= set(self.files)

    def watch(self, ids: Iterable[str]) -> None:
        """Follow these rows (again): known by id only, not reported yet."""
        ids = list(ids)
        for i in ids:
            self.files[i] = {"source": None, "destination": None}
        again = set(ids)
        self.reported = [i for i in self.reported if i not in again]

    def to_json(self) -> dict:
        doc = {"job_id": self.job_id, "user": self.user, "endpoint": self.endpoint, "submitted": self.submitted,
               "files": self.files, "reported": self.reported, "batches": self.batches}
        if self.last_progress is not None:
            doc["last_progress"] = self.last_progress
        if self.last_news is not None:
            doc["last_news"] = self.last_news
        return doc

    @classmethod
    def from_json(cls, doc: Any) -> MonitorEntry:
        doc = _object(doc)
        for key in ("job_id", "endpoint"):
            if not _is_str(doc.get(key)):
                raise HandoffShapeError(f"'{key}' must be a non-empty string")
        files = doc.get("files")
        if not isinstance(files, dict) or not all(isinstance(k, str) for k in files):
            raise HandoffShapeError("'files' must be an object keyed by row id")
        if not isinstance(doc.get("reported"), list) or not all(isinstance(i, str) for i in doc["reported"]):
            raise HandoffShapeError("'reported' must be a list of row ids")
        for key in ("batches", "submitted"):
            if not _is_number(doc.get(key)):
                raise HandoffShapeError(f"'{key}' must be a number")
        for key in ("last_progress", "last_news"):
            if key in doc and not _is_number(doc[key]):
                raise HandoffShapeError(f"'{key}' must be a number")
        return cls(doc["job_id"], doc["endpoint"], doc["submitted"], dict(files), list(doc["reported"]),
                   doc["batches"], doc.get("last_progress"), doc.get("user"), doc.get("last_news"))


# -- reporter/: finished files of one job -------------------------------------------------


@dataclass
class ReportedFile:
    id: str
    state: str
    reason: str | None = None
    #: the FTS job, when the entry holds files of several jobs (the receiver's)
    job_id: str | None = None

    def to_json(self) -> dict:
        doc = {"id": self.id, "state": self.state, "reason": self.reason}
        if self.job_id is not None:
            doc["job_id"] = self.job_id
        return doc


@dataclass
class ReporterEntry:
    """Files that reached a terminal state at FTS, for the reporter to record: of one job
    (``job_id``), or of several (``job_id`` None, each file naming its own)."""

    job_id: str | None
    files: list[ReportedFile]
    user: str | None = None
    endpoint: str | None = None

    def ids(self) -> list[str]:
        return [f.id for f in self.files]

    @classmethod
    def of_jobs(cls, entries: Sequence[ReporterEntry], user: str | None = None,
                endpoint: str | None = None) -> ReporterEntry:
        """One entry holding the files of several entries, each file naming its FTS job."""
        return cls(None, [replace(f, job_id=job_id) for e in entries for job_id, f in e.results()], user, endpoint)

    def results(self) -> list[tuple[str, ReportedFile]]:
        """(FTS job id, file) for every file."""
        return [(f.job_id or self.job_id, f) for f in self.files]

    def to_json(self) -> dict:
        return {"job_id": self.job_id, "user": self.user, "endpoint": self.endpoint,
                "files": [f.to_json() for f in self.files]}

    @classmethod
    def from_json(cls, doc: Any) -> ReporterEntry:
        doc = _object(doc)
        job_id = doc.get("job_id")
        if job_id is not None and not _is_str(job_id):
            raise HandoffShapeError("'job_id' must be a non-empty string or null")
        files = doc.get("files")
        if not isinstance(files, list):
            raise HandoffShapeError("'files' must be a list")
        for f in files:
            if not isinstance(f, dict) or not _is_str(f.get("id")) or not _is_str(f.get("state")):
                raise HandoffShapeError("every file must be an object with an 'id' and a 'state'")
            if f.get("reason") is not None and not isinstance(f["reason"], str):
                raise HandoffShapeError("a file's 'reason' must be a string or null")
            if f.get("job_id") is not None and not _is_str(f["job_id"]):
                raise HandoffShapeError("a file's 'job_id' must be a non-empty string or null")
            if job_id is None and f.get("job_id") is None:
                raise HandoffShapeError("every file must name its 'job_id' when the entry names none")
        return cls(job_id, [ReportedFile(f["id"], f["state"], f.get("reason"), f.get("job_id")) for f in files],
                   doc.get("user"), doc.get("endpoint"))


#: the record each sandbox kind holds
RECORDS: dict[str, type[SubmitRecord] | type[MonitorEntry] | type[ReporterEntry]] = {
    "submit": SubmitRecord, "stage": SubmitRecord, "monitor": MonitorEntry, "reporter": ReporterEntry}
