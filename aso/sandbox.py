"""The on-disk hand-offs between components (docs/architecture.md, "Sandboxes").

``<root>/<kind>/<user>/<name>.json``: ``monitor`` entries are written by ``aso transfer`` and
read by ``aso monitor``; ``reporter`` entries are written by the monitor and read by
``aso reporter``; ``submit`` holds the transfer component's write-ahead records.

A write is atomic (temporary file, fsync, rename, fsync of the folder), so a reader never
sees half an entry and a crash leaves either the old entry or the new one. Names that start
with a dot are temporaries and are never listed. An entry that cannot be parsed (which an
atomic write cannot produce, but a disk can), that has the wrong shape for its kind (each
kind's record in :mod:`aso.components.handoffs` defines it), or that
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aso import validate
from aso.components.handoffs import RECORDS, HandoffShapeError
from aso.errors import AsoError, ValidationError

log = logging.getLogger("aso.sandbox")

#: submit/ is aso transfer's write-ahead records, stage/ aso stager's (the same record kind)
KINDS = ("monitor", "reporter", "submit", "stage")
SUFFIX = ".json"


class SandboxError(AsoError):
    """A sandbox folder cannot be written (or an entry cannot be moved aside)."""


@dataclass(frozen=True)
class Entry:
    user: str
    name: str
    path: Path


def _dumps(data: Any) -> str:
    # json.dumps, not json.dump: dump streams through the pure-Python encoder, several
    # times slower for the hundred-file records a pass writes per user
    return json.dumps(data, separators=(",", ":"))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_json(path: Path, data: Any, durable: bool = True) -> None:
    """Write ``data`` as JSON to ``path`` so that readers see all of it or none of it.
    ``durable=False`` skips the fsyncs: still atomic, but a power cut may bring back the
    previous content (for records whose loss only repeats work). Raises
    :class:`SandboxError` when the folder cannot be written."""
    try:
        _atomic_write_json(path, data, durable)
    except OSError as exc:
        raise SandboxError(f"cannot write sandbox entry {path}: {exc.strerror or exc}") from None


def _atomic_write_json(path: Path, data: Any, durable: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(_dumps(data))
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        _fsync_dir(path.parent)


def atomic_write_many(folder: Path, docs: list[tuple[Path, Any]]) -> None:
    """Write several JSON files of one folder, each atomically (as :func:`atomic_write_json`),
    with one fsync of the folder for all the renames instead of one per file: when this
    returns every file is durable, and a crash before leaves each file old or new."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        temps: list[tuple[str, Path]] = []
        try:
            for path, data in docs:
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
                temps.append((tmp, path))
                with os.fdopen(fd, "w") as fh:
                    fh.write(_dumps(data))
                    fh.flush()
                    os.fsync(fh.fileno())
            for tmp, path in temps:
                os.replace(tmp, path)
        except BaseException:
            for tmp, _ in temps:  # (one already renamed is gone under its temporary name)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            raise
        if docs:
            _fsync_dir(folder)
    except OSError as exc:
        raise SandboxError(f"cannot write sandbox entries in {folder}: {exc.strerror or exc}") from None


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

    def write(self, user: str, name: str, data: Any, durable: bool = True) -> Path:
        path = self.path(user, name)
        atomic_write_json(path, data, durable)
        return path

    @contextmanager
    def user_lock(self, user: str) -> Iterator[None]:
        """Exclusive use of one user's entries among processes (the receiver and the monitor
        both update monitor entries); released by the OS if the holder dies."""
        import fcntl

        validate.username(user, "user")
        folder = self.dir / ".locks"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder / f"{user}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise SandboxError(f"cannot create the lock of {self.kind}/{user}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

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

    def remove_many(self, user: str, names: list[str]) -> int:
        """Delete several of one user's entries (as :meth:`remove`) with one fsync of the
        folder; the number that were there."""
        paths = [self.path(user, name) for name in names]
        removed = 0
        try:
            for path in paths:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed += 1
            if removed:
                _fsync_dir(self.dir / user)
        except OSError as exc:
            raise SandboxError(f"cannot remove sandbox entries of {self.kind}/{user}: {exc.strerror or exc}") from None
        return removed

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

    def entry(self, user: str, name: str) -> Entry:
        """The entry ``user``/``name`` (which may not exist: loading it then gives None)."""
        return Entry(user, name, self.path(user, name))

    def write_record(self, user: str, name: str, record: Any, durable: bool = True) -> Path:
        """Write one of :mod:`aso.components.handoffs`' records as this kind's entry."""
        if not isinstance(record, RECORDS[self.kind]):
            raise TypeError(f"a {self.kind} entry is a {RECORDS[self.kind].__name__}, not {type(record).__name__}")
        return self.write(user, name, record.to_json(), durable)

    def write_records(self, user: str, records: list[tuple[str, Any]]) -> None:
        """Write several of one user's entries (name, record), each atomic and all durable
        when this returns, with one fsync of the folder (see :func:`atomic_write_many`)."""
        for _, record in records:
            if not isinstance(record, RECORDS[self.kind]):
                raise TypeError(f"a {self.kind} entry is a {RECORDS[self.kind].__name__}, not {type(record).__name__}")
        atomic_write_many(self.dir / validate.username(user, "user"),
                          [(self.path(user, name), record.to_json()) for name, record in records])

    def load_record(self, entry: Entry) -> Any | None:
        """An entry as its kind's record (:mod:`aso.components.handoffs`); None as for
        :meth:`load`."""
        loaded = self._load(entry)
        return None if loaded is None else loaded[1]

    def load(self, entry: Entry) -> Any | None:
        """An entry's content; None (after moving it to ``.quarantine/``) when it cannot be
        read, is not valid JSON, or does not have the shape of its kind."""
        loaded = self._load(entry)
        return None if loaded is None else loaded[0]

    def _load(self, entry: Entry) -> tuple[Any, Any] | None:
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
        try:
            record = RECORDS[self.kind].from_json(doc)
        except HandoffShapeError as exc:
            self.quarantine(entry, f"has the wrong shape ({exc})")
            return None
        return doc, record

    def count(self) -> int:
        return sum(1 for _ in self.entries())
