"""Validators for values that reach the store, the file system or a URL.

Each raises :class:`aso.errors.ValidationError` naming the field, so the caller can answer
400 (REST) or print a clear message (CLI) and write nothing.
"""

from __future__ import annotations

import functools
import hashlib
import posixpath
import re
from urllib.parse import unquote, urlsplit

from aso.errors import ValidationError

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# CRAB's asoworker pattern, including '%' (updatePublication uses it as a LIKE pattern).
WORKER_RE = re.compile(r"^[A-Za-z0-9\-._%]{1,100}$")
TASKNAME_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,255}$")
SITE_RE = re.compile(r"^[A-Za-z0-9_\-]{1,100}$")
# A path part in a sandbox: job ids (uuids), user names, chunk ids.
PATH_PART_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,200}$")
ROW_ID_RE = re.compile(r"^[0-9a-f]{56}$")
LFN_PART_RE = re.compile(r"[A-Za-z0-9_.+\-]+")
#: the whole LFN rule in one expression (parts of LFN_PART_RE, none '.' or '..'): the fast
#: path of :func:`lfn`, which works out what is wrong only for a value this refuses
LFN_RE = re.compile(r"(?:/(?!\.\.?(?:/|$))[A-Za-z0-9_.+\-]+)+")
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
    """An LFN: ``/`` followed by path parts of ``[A-Za-z0-9_.+-]``, none empty, ``.`` or ``..``.

    The character set is CMS's, and deliberately has nothing a URL or a shell reads as
    syntax (no ``%``, ``#``, ``?``, spaces or controls), so an LFN appended to a storage
    prefix names exactly the file it says, before and after any decoding.
    """
    if isinstance(value, str) and len(value) <= MAX_LFN and LFN_RE.fullmatch(value):
        return value
    if not isinstance(value, str) or not value:
        raise ValidationError(field, "must be a non-empty string")
    if len(value) > MAX_LFN:
        raise ValidationError(field, f"longer than {MAX_LFN} characters")
    if not value.startswith("/"):
        raise ValidationError(field, f"{value[:100]!r} is not an absolute path (it must start with '/')")
    for part in value[1:].split("/"):
        if not part:
            raise ValidationError(field, f"{value[:100]!r} has an empty path part ('//' or a trailing '/')")
        if part in (".", ".."):
            raise ValidationError(field, f"{value[:100]!r} contains a '{part}' path part")
        if not LFN_PART_RE.fullmatch(part):
            bad = next(c for c in part if not LFN_PART_RE.fullmatch(c))
            raise ValidationError(field, f"{value[:100]!r} contains {bad!r}; path parts are [A-Za-z0-9_.+-]")
    return value


def lfn_under(value: str, area: str) -> bool:
    """Whether the (valid) LFN ``value`` lies in ``area``: a prefix ending in '/', or a
    name that must be followed by '/' or '.' (CRAB writes /store/temp/user/NAME.HASH/...)."""
    if area.endswith("/"):
        return value.startswith(area) and len(value) > len(area)
    return value.startswith(area) and len(value) > len(area) + 1 and value[len(area)] in "/."


def pfn(prefix: str, lfn_value: str) -> str:
    """The storage URL of an LFN at a site: ``prefix`` + LFN, refused if it could leave it.

    The LFN is checked against the rule first; then the joined URL's path is decoded and
    normalised and must still lie below the prefix's own (decoded, normalised) path, so no
    spelling of a prefix or an LFN can name a file outside the site.
    """
    lfn(lfn_value, "lfn")
    base, inside, plain = _prefix_inside(prefix)
    url = base + lfn_value
    if plain:
        return url
    parts = urlsplit(url)
    path = posixpath.normpath(unquote(parts.path))
    if parts.query or parts.fragment or "\x00" in path or not path.startswith(inside):
        raise ValidationError("lfn", f"{lfn_value[:100]!r} does not stay inside the site prefix {prefix!r}")
    return url


@functools.lru_cache(maxsize=256)
def _prefix_inside(prefix: str) -> tuple[str, str, bool]:
    """A site prefix without its trailing '/', the decoded, normalised path every URL
    below it starts with (a pass builds a URL per file over a few prefixes), and whether
    the prefix is plain: nothing in it that decoding or normalising changes, and a path
    appended to it stays the URL's path. Below a plain prefix, an LFN that keeps the rule
    (plain parts, no '%', '?', '#') is already inside, so its URL needs no checking."""
    base = prefix.rstrip("/")
    base_path = posixpath.normpath(unquote(urlsplit(base + "/").path) or "/")
    inside = base_path.rstrip("/") + "/"
    probe = "/aso-probe/x"
    parts = urlsplit(base + probe)
    plain = (not any(c in base for c in "%?#\x00\\") and not parts.query and not parts.fragment
             and parts.path.endswith(probe) and posixpath.normpath(parts.path) == inside + probe[1:])
    return base, inside, plain


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


#: the largest integer any column holds (a signed 64-bit BIGINT)
MAX_INT = 2**63 - 1
#: the largest value of a 32-bit INTEGER column (retry counts, flags)
MAX_INT32 = 2**31 - 1


def non_negative_int(value, field: str, maximum: int = MAX_INT) -> int:
    """An integer 0 <= n <= ``maximum``, given as an int or a string of ASCII digits.

    Floats, booleans and digits from other scripts (``'²'``, Arabic-Indic digits) are
    refused: they are not what a client meant, and ``int()`` would take some of them.
    """
    if isinstance(value, bool):
        raise ValidationError(field, "expected a non-negative integer, got a boolean")
    if isinstance(value, str):
        text = value.strip()
        if not (text.isascii() and text.isdigit()) or len(text) > 20:
            raise ValidationError(field, f"expected a non-negative integer, got {value[:40]!r}")
        value = int(text)
    if not isinstance(value, int) or value < 0:
        shown = repr(value)[:40] if not isinstance(value, (dict, list)) else type(value).__name__
        raise ValidationError(field, f"expected a non-negative integer, got {shown}")
    if value > maximum:
        raise ValidationError(field, f"at most {maximum}")
    return value
