"""The on-disk hand-offs between components (DESIGN §5).

``<root>/<kind>/<user>/<name>.json``: ``monitor`` entries are written by ``aso transfer`` and
read by ``aso monitor``; ``reporter`` entries are written by the monitor and read by
``aso reporter``; ``submit`` holds the transfer component's write-ahead records.

A write is atomic (temporary file, fsync, rename, fsync of the folder), so a reader never
sees half an entry and a crash leaves either the old entry or the new one. Names that start
with a dot are temporaries and are never listed. An entry that cannot be parsed (which an
atomic write cannot produce, but a disk can) is moved aside to ``.quarantine/``, never deleted,
so the files it names stay findable.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aso import validate
from aso.errors import ValidationError

log = logging.getLogger("aso.sandbox")

KINDS = ("monitor", "reporter", "submit")
SUFFIX = ".json"


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
    """Write ``data`` as JSON to ``path`` so that readers see all of it or none of it."""
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
        except FileNotFoundError:
            return False
        _fsync_dir(path.parent)
        return True

    def users(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(p.name for p in self.dir.iterdir() if p.is_dir() and not p.name.startswith("."))

    def entries(self, user: str | None = None) -> Iterator[Entry]:
        """Entries in name order, user by user (temporaries and quarantined files skipped)."""
        for u in [validate.username(user, "user")] if user is not None else self.users():
            folder = self.dir / u
            if not folder.is_dir():
                continue
            for p in sorted(folder.iterdir()):
                if p.name.startswith(".") or not p.name.endswith(SUFFIX) or not p.is_file():
                    continue
                yield Entry(u, p.name[: -len(SUFFIX)], p)

    def load(self, entry: Entry) -> Any | None:
        """An entry's content; None (after moving it to ``.quarantine/``) when unreadable."""
        try:
            with open(entry.path) as fh:
                return json.load(fh)
        except FileNotFoundError:
            return None  # removed meanwhile by another pass
        except (ValueError, UnicodeDecodeError) as exc:
            target = self.dir / ".quarantine" / entry.user / entry.path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(entry.path, target)
            log.error("%s entry %s/%s is not valid JSON (%s); moved to %s for an operator", self.kind, entry.user,
                      entry.name, exc, target)
            return None

    def count(self) -> int:
        return sum(1 for _ in self.entries())
