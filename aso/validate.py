"""Validators for values that reach the store, the file system or a URL.

Each raises :class:`aso.errors.ValidationError` naming the field, so the caller can answer
400 (REST) or print a clear message (CLI) and write nothing.
"""

from __future__ import annotations

import hashlib
import re

from aso.errors import ValidationError

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# CRAB's asoworker pattern, including '%' (updatePublication uses it as a LIKE pattern).
WORKER_RE = re.compile(r"^[A-Za-z0-9\-._%]{1,100}$")
TASKNAME_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,255}$")
SITE_RE = re.compile(r"^[A-Za-z0-9_\-]{1,100}$")
# A path part in a sandbox: job ids (uuids), user names, chunk ids.
PATH_PART_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,200}$")
ROW_ID_RE = re.compile(r"^[0-9a-f]{56}$")
MAX_LFN = 1000


def lfn_id(lfn: str) -> str:
    """The row id of a transfer: CRAB's sha224 hex digest of the source LFN."""
    return hashlib.sha224(lfn.encode("utf-8")).hexdigest()


def username(value, field: str = "username") -> str:
    # '.' and '..' match the character class but would escape a sandbox folder.
    if not isinstance(value, str) or not USERNAME_RE.match(value) or value in (".", ".."):
        raise ValidationError(field, f"{value!r} is not a user name ([A-Za-z0-9_.-], 1 to 64 characters, not '.' or '..')")
    return value


def worker(value, field: str = "asoworker") -> str:
    if not isinstance(value, str) or not WORKER_RE.match(value):
        raise ValidationError(field, f"{value!r} is not a worker name ([A-Za-z0-9-._%], 1 to 100 characters)")
    return value


def taskname(value, field: str = "taskname") -> str:
    if not isinstance(value, str) or not TASKNAME_RE.match(value):
        raise ValidationError(field, f"{value!r} is not a task name ([A-Za-z0-9_.:-], 1 to 255 characters)")
    return value


def site(value, field: str = "site") -> str:
    if not isinstance(value, str) or not SITE_RE.match(value):
        raise ValidationError(field, f"{value!r} is not a site name ([A-Za-z0-9_-], 1 to 100 characters)")
    return value


def lfn(value, field: str = "lfn") -> str:
    if not isinstance(value, str) or not value:
        raise ValidationError(field, "must be a non-empty string")
    if not value.startswith("/"):
        raise ValidationError(field, f"{value!r} is not an absolute path")
    if len(value) > MAX_LFN:
        raise ValidationError(field, f"longer than {MAX_LFN} characters")
    parts = value.split("/")
    if ".." in parts or "." in parts:
        raise ValidationError(field, f"{value!r} contains '.' or '..'")
    if "//" in value or "\x00" in value or any(ord(c) < 32 for c in value):
        raise ValidationError(field, f"{value!r} contains an empty path part or a control character")
    return value


def path_part(value, field: str) -> str:
    """A value about to become one component of a file system path."""
    if not isinstance(value, str) or not PATH_PART_RE.match(value) or value in (".", ".."):
        raise ValidationError(field, f"{value!r} cannot be a path part ([A-Za-z0-9_.-], no '..')")
    return value


def row_id(value, field: str = "id") -> str:
    if not isinstance(value, str) or not ROW_ID_RE.match(value):
        raise ValidationError(field, f"{value!r} is not a transfer id (56 lower-case hex digits)")
    return value


def adler32(value, field: str = "checksum") -> str:
    """Normalise an adler32 checksum to 8 lower-case hex digits (accepts 'ADLER32:' prefix)."""
    if not isinstance(value, str):
        raise ValidationError(field, f"expected an adler32 hex string, got {type(value).__name__}")
    text = value.strip()
    if ":" in text:
        alg, _, text = text.partition(":")
        if alg.lower() != "adler32":
            raise ValidationError(field, f"only adler32 checksums are supported, got {alg!r}")
    if not re.fullmatch(r"[0-9A-Fa-f]{1,8}", text):
        raise ValidationError(field, f"{value!r} is not an adler32 checksum (1 to 8 hex digits)")
    return text.lower().rjust(8, "0")


def non_negative_int(value, field: str) -> int:
    if isinstance(value, bool):
        raise ValidationError(field, "expected a non-negative integer, got a boolean")
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, int) or value < 0:
        raise ValidationError(field, f"expected a non-negative integer, got {value!r}")
    return value
