"""The on-disk hand-offs between components (docs/architecture.md, "Sandboxes").

``<root>/<kind>/<user>/<name>.json``: ``monitor`` entries are written by ``aso transfer`` and
read by ``aso monitor``; ``reporter`` entries are written by the monitor and read by
``aso reporter``; ``submit`` holds the transfer component's write-ahead records.

A write is atomic (temporary file, fsync, rename, fsync of the folder), so a reader never
sees half an entry and a crash leaves either the old entry or the new one. Names that start
with a dot are temporaries and are never listed. An entry that cannot be parsed (which an
atomic write cannot produce, but a disk can), that has the wrong shape for its kind, or that
cannot be read at all (a folder or a FIFO where an entry should be) is moved aside to
``.quarantine/`` with an ERROR log line, never deleted, so the files it names stay findable
and one bad entry does not stop a component for every user. A sandbox that cannot be written
raises :class:`SandboxError` (one clear message) instead of an OS traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aso import validate
from aso.errors import AsoError, ValidationError

log = logging.getLogger("aso.sandbox")

KINDS = ("monitor", "reporter", "submit")
SUFFIX = ".json"


class SandboxError(AsoError):
    """A sandbox folder cannot be written (or an entry cannot be moved aside)."""


@dataclass(frozen=True)
class Entry:
    user: str
    name: str
    path: Path


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` so that readers see all of it or none of it.
    Raises :class:`SandboxError` when the folder cannot be written."""
    try:
        _atomic_write_json(path, data)
    except OSError as exc:
        raise SandboxError(f"cannot write sandbox entry {path}: {exc.strerror or exc}") from None


def _atomic_write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, separators=(",", ":"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _is_str(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def monitor_shape(doc: Any) -> str | None:
    """What is wrong with a monitor entry (None: nothing)."""
    if not isinstance(doc, dict):
        return f"a JSON object was expected, not {type(doc).__name__}"
    for key in ("job_id", "endpoint"):
        if not _is_str(doc.get(key)):
            return f"'{key}' must be a non-empty string"
    files = doc.get("files")
    if not isinstance(files, dict) or not all(isinstance(k, str) for k in files):
        return "'files' must be an object keyed by row id"
    if not isinstance(doc.get("reported"), list) or not all(isinstance(i, str) for i in doc["reported"]):
        return "'reported' must be a list of row ids"
    for key in ("batches", "submitted"):
        if not _is_int(doc.get(key)):
            return f"'{key}' must be a number"
    if "last_progress" in doc and not _is_int(doc["last_progress"]):
        return "'last_progress' must be a number"
    return None


def reporter_shape(doc: Any) -> str | None:
    """What is wrong with a reporter entry (None: nothing)."""
    if not isinstance(doc, dict):
        return f"a JSON object was expected, not {type(doc).__name__}"
    if not _is_str(doc.get("job_id")):
        return "'job_id' must be a non-empty string"
    files = doc.get("files")
    if not isinstance(files, list):
        return "'files' must be a list"
    for f in files:
        if not isinstance(f, dict) or not _is_str(f.get("id")) or not _is_str(f.get("state")):
            return "every file must be an object with an 'id' and a 'state'"
        if f.get("reason") is not None and not isinstance(f["reason"], str):
            return "a file's 'reason' must be a string or null"
    return None


def submit_shape(doc: Any) -> str | None:
    """What is wrong with a write-ahead record (None: nothing). A record holds a user's
    chunks under ``chunks``, or is one chunk."""
    if not isinstance(doc, dict):
        return f"a JSON object was expected, not {type(doc).__name__}"
    chunks = doc.get("chunks", [doc])
    if not isinstance(chunks, list):
        return "'chunks' must be a list"
    for chunk in chunks:
        if not isinstance(chunk, dict) or not _is_str(chunk.get("sid")) or not _is_str(chunk.get("endpoint")):
            return "every chunk must be an object with a 'sid' and an 'endpoint'"
        transfers = chunk.get("transfers")
        if not isinstance(transfers, list):
            return "a chunk's 'transfers' must be a list"
        for t in transfers:
            if not isinstance(t, dict) or not all(_is_str(t.get(k)) for k in ("id", "source", "destination")):
                return "every transfer must be an object with an 'id', a 'source' and a 'destination'"
    return None


#: the shape every entry of a kind must have to be used
SHAPES: dict[str, Callable[[Any], str | None]] = {"monitor": monitor_shape, "reporter": reporter_shape,
                                                 "submit": submit_shape}


class Sandbox:
    """One kind of hand-off under a sandbox root."""

    def __init__(self, root: str | os.PathLike, kind: str):
        if kind not in KINDS:
            raise ValueError(f"unknown sandbox kind {kind!r} (one of {', '.join(KINDS)})")
        self.kind = kind
        self.dir = Path(root) / kind

    def path(self, user: str, name: str) -> Path:
        validate.username(user, "user")
        validate.path_part(name, f"{self.kind} entry name")
        if name.startswith("."):
            raise ValidationError(f"{self.kind} entry name", f"{name!r} must not start with '.'")
        return self.dir / user / f"{name}{SUFFIX}"

    def write(self, user: str, name: str, data: Any) -> Path:
        path = self.path(user, name)
        atomic_write_json(path, data)
        return path

    def read(self, user: str, name: str) -> Any:
        with open(self.path(user, name)) as fh:
            return json.load(fh)

    def exists(self, user: str, name: str) -> bool:
        return self.path(user, name).exists()

    def remove(self, user: str, name: str) -> bool:
        """Delete an entry once what it caused is durable elsewhere; False if it was gone."""
        path = self.path(user, name)
        try:
            path.unlink()
            _fsync_dir(path.parent)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise SandboxError(f"cannot remove sandbox entry {path}: {exc.strerror or exc}") from None
        return True

    def users(self) -> list[str]:
        """User folders (a folder whose name is not a valid user name is moved aside)."""
        if not self.dir.is_dir():
            return []
        users = []
        for p in sorted(self.dir.iterdir()):
            if p.name.startswith(".") or not p.is_dir():
                continue
            try:
                validate.username(p.name, "user")
            except ValidationError as exc:
                self._move_aside(p, self.dir / ".quarantine" / p.name, f"folder {p.name!r}", str(exc))
                continue
            users.append(p.name)
        return users

    def entries(self, user: str | None = None) -> Iterator[Entry]:
        """Entries in name order, user by user (temporaries and quarantined files skipped;
        an entry with a bad name, or that is not a regular file, moved aside)."""
        for u in [validate.username(user, "user")] if user is not None else self.users():
            folder = self.dir / u
            if not folder.is_dir():
                continue
            try:
                paths = sorted(folder.iterdir())
            except OSError as exc:
                log.error("%s folder %s cannot be listed (%s); its entries wait for an operator", self.kind, folder, exc)
                continue
            for p in paths:
                if p.name.startswith(".") or not p.name.endswith(SUFFIX):
                    continue
                name = p.name[: -len(SUFFIX)]
                entry = Entry(u, name, p)
                try:
                    mode = p.lstat().st_mode
                except FileNotFoundError:
                    continue  # removed meanwhile
                except OSError as exc:
                    self.quarantine(entry, f"cannot be examined: {exc}")
                    continue
                if stat.S_ISLNK(mode) or not stat.S_ISREG(mode):
                    # a folder, a FIFO (whose open would block), a device, a link: not an entry
                    self.quarantine(entry, "is not a regular file")
                    continue
                try:
                    validate.path_part(name, "entry name")
                except ValidationError as exc:
                    self.quarantine(entry, str(exc))
                    continue
                yield entry

    def _move_aside(self, source: Path, target: Path, what: str, problem: str) -> Path:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists() or target.is_symlink():
                target = target.with_name(f"{target.name}.{time.time_ns()}")
            os.replace(source, target)
        except FileNotFoundError:
            return target  # removed meanwhile by another pass
        except OSError as exc:
            raise SandboxError(f"{self.kind} {what} {problem}, and cannot be moved to {target.parent}: "
                               f"{exc.strerror or exc}") from None
        log.error("%s %s %s; moved to %s for an operator", self.kind, what, problem, target)
        return target

    def quarantine(self, entry: Entry, problem: str) -> Path:
        """Move an entry aside to ``.quarantine/<user>/`` (never deleted) with an ERROR line."""
        return self._move_aside(entry.path, self.dir / ".quarantine" / entry.user / entry.path.name,
                                f"entry {entry.user}/{entry.name}", problem)

    def load(self, entry: Entry) -> Any | None:
        """An entry's content; None (after moving it to ``.quarantine/``) when it cannot be
        read, is not valid JSON, or does not have the shape of its kind."""
        try:
            with open(entry.path) as fh:
                doc = json.load(fh)
        except FileNotFoundError:
            return None  # removed meanwhile by another pass
        except (ValueError, UnicodeDecodeError) as exc:
            self.quarantine(entry, f"is not valid JSON ({exc})")
            return None
        except OSError as exc:
            self.quarantine(entry, f"cannot be read ({exc.strerror or exc})")
            return None
        problem = SHAPES[self.kind](doc)
        if problem is not None:
            self.quarantine(entry, f"has the wrong shape ({problem})")
            return None
        return doc

    def count(self) -> int:
        return sum(1 for _ in self.entries())
