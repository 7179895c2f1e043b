"""Transfer URLs as the service reads them: checked once, the same way everywhere.

A ``file://`` URL names a local path. :func:`file_path` is the one function that turns
such a URL into that path: it decodes the percent-escapes once, refuses what could make the
path mean something other than what it says, and normalises it. Submission checks that
path against the service's roots, and the file plug-in opens that same path (after checking
its real path, symlinks resolved, against the roots again), so no spelling of a URL can be
read one way when it is checked and another when it is used.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable, Sequence
from urllib.parse import unquote, urlsplit

SUPPORTED_SCHEMES = ("file", "http", "https", "root")
#: longest URL accepted (FTS3 stores SURLs in 1100-character columns)
MAX_URL = 4096


class UrlError(ValueError):
    """A URL the service refuses; the message says why (without the URL itself)."""


#: Unicode's control characters (category Cc: C0, DEL and C1), as one character class: a
#: submission checks every URL of every file, and a category lookup per character was
#: most of the service's time per submission
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f]")


def _control(text: str) -> str | None:
    """The first control character in ``text`` (NUL, newlines, DEL, C1 controls), if any."""
    found = _CONTROL_RE.search(text)
    return found.group() if found else None


def _decoded_path(raw_path: str) -> str:
    """The path of a URL with its escapes decoded exactly once (invalid UTF-8 refused)."""
    try:
        return unquote(raw_path, errors="strict")
    except UnicodeDecodeError:
        raise UrlError("its path does not decode to UTF-8") from None


def _check_segments(path: str) -> None:
    for segment in path.split("/"):
        if segment in (".", ".."):
            raise UrlError(f"its decoded path contains '{segment}' as a segment")


def check_url(value: str) -> str:
    """Refuse what no scheme may carry; return the URL unchanged. Raises UrlError."""
    if len(value) > MAX_URL:
        raise UrlError(f"longer than {MAX_URL} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UrlError("not valid Unicode (lone surrogate)") from None
    bad = _control(value)
    if bad is not None:
        raise UrlError(f"contains the control character {bad!r}")
    if "#" in value:
        raise UrlError("contains a '#' fragment")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise UrlError(f"is not a URL ({exc})") from None
    if parts.scheme not in SUPPORTED_SCHEMES:
        raise UrlError(f"scheme must be one of {', '.join(SUPPORTED_SCHEMES)}")
    if not parts.path or parts.path == "/":
        raise UrlError("has no path")
    if parts.scheme == "file":
        file_path(value)
        return value
    if parts.scheme == "root":
        root_parts(value)
        return value
    if not parts.hostname:
        raise UrlError("has no host")
    path = _decoded_path(parts.path)
    bad = _control(path)
    if bad is not None:
        raise UrlError(f"its decoded path contains the control character {bad!r}")
    _check_segments(path)
    return value


def _plain_url(url: str, kind: str) -> None:
    """What a local or root URL must not carry, before it is split: a query (``kind``
    URLs take none), a fragment, a control character."""
    if "?" in url:
        raise UrlError(f"{kind} URLs take no '?' query" + (" (CGI)" if kind == "root" else ""))
    if "#" in url:
        raise UrlError("contains a '#' fragment")
    bad = _control(url)
    if bad is not None:
        raise UrlError(f"contains the control character {bad!r}")


def _decoded_file_path(raw: str, kind: str) -> str:
    """The path of a file or root URL decoded once and checked: no encoded '/', no control
    character after decoding, no '.' or '..' segment, not a folder."""
    if "%2f" in raw.lower():
        raise UrlError(f"{kind} URLs may not encode '/' (%2F) in their path")
    path = _decoded_path(raw)
    bad = _control(path)
    if bad is not None:
        raise UrlError(f"its decoded path contains the control character {bad!r}")
    return path


def file_path(url: str) -> str:
    """The local path a ``file://`` URL names: decoded once, checked, normalised.

    Refused (UrlError): another host than '' or 'localhost', a query ('?') or fragment
    ('#'), an encoded slash (%2F), a path that does not decode to UTF-8, a control character
    (NUL included) before or after decoding, a '.' or '..' segment after decoding, a path
    ending in '/' (a folder, not a file).
    """
    _plain_url(url, "file")
    parts = urlsplit(url)
    if parts.scheme != "file":
        raise UrlError("is not a file:// URL")
    if parts.netloc not in ("", "localhost"):
        raise UrlError("file URLs are local (file:///path)")
    path = _decoded_file_path(parts.path, "file")
    if not path.startswith("/"):
        raise UrlError("its path is not absolute")
    _check_segments(path)
    if path.endswith("/"):
        raise UrlError("its path names a folder (ends in '/')")
    normal = posixpath.normpath(path)
    if normal.startswith("//"):  # POSIX keeps a leading '//'; it means '/' on Linux
        normal = "/" + normal.lstrip("/")
    if normal == "/":
        raise UrlError("has no path")
    return normal


def root_parts(url: str) -> tuple[str, str]:
    """``("root://host[:port]", "/absolute/path")`` of a ``root://`` URL: the path decoded
    once, checked, normalised; the XRootD plug-in addresses the file by exactly this path
    (open, stat, rename, remove and checksum alike).

    Refused (UrlError): no host, a user name, a query or fragment (an opaque CGI could not
    follow the file through its rename), an encoded slash (%2F), a path that does not
    decode to UTF-8, a control character, '?' or '#' after decoding, a '.' or '..' segment
    after decoding, a path ending in '/' (a folder). ``root://host//store/x`` and
    ``root://host/store/x`` both name ``/store/x``.
    """
    _plain_url(url, "root")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlError(f"is not a URL ({exc})") from None
    if parts.scheme != "root":
        raise UrlError("is not a root:// URL")
    if not parts.hostname:
        raise UrlError("has no host")
    if "@" in parts.netloc:
        raise UrlError("root URLs take no user name")
    path = _decoded_file_path(parts.path, "root")
    for char in "?#":
        if char in path:
            raise UrlError(f"its decoded path contains {char!r}")
    _check_segments(path)
    if path.endswith("/"):
        raise UrlError("its path names a folder (ends in '/')")
    normal = "/" + posixpath.normpath(path).lstrip("/")
    if normal == "/":
        raise UrlError("has no path")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return f"root://{host}{f':{port}' if port is not None else ''}", normal


def normalise_roots(roots: Iterable[str | os.PathLike]) -> tuple[str, ...]:
    """Absolute, normalised folders, duplicates dropped, order kept."""
    out: list[str] = []
    for root in roots:
        text = os.path.abspath(os.fspath(root))
        if text not in out:
            out.append(text)
    return tuple(out)


def _inside(path: str, root: str) -> bool:
    base = root.rstrip("/") + "/"
    return path.startswith(base) and len(path) > len(base)


def under_roots(path: str, roots: Sequence[str]) -> bool:
    """Whether the normalised absolute ``path`` lies strictly below one of ``roots``."""
    return any(_inside(path, root) for root in roots)


def real_path_under_roots(path: str, roots: Sequence[str]) -> bool:
    """Whether ``path`` with every symlink resolved (for a file that does not exist yet:
    its nearest existing folder resolved, the rest appended) lies below one of the roots,
    themselves resolved."""
    real = os.path.realpath(path)
    return any(_inside(real, os.path.realpath(root)) for root in roots)


def refused_root_message(roots: Sequence[str]) -> str:
    if not roots:
        return "file:// URLs are refused: this service has no local roots (start it with --root DIR)"
    return f"file:// URLs must lie under one of the service's roots ({', '.join(roots)})"


def roots_from_site_prefixes(prefixes: Iterable[str]) -> tuple[str, ...]:
    """The local folders of the ``file://`` prefixes among ``prefixes`` (others ignored)."""
    folders = []
    for prefix in prefixes:
        if not isinstance(prefix, str) or not prefix.startswith("file:"):
            continue
        try:
            folders.append(file_path(prefix.rstrip("/") + "/x").rsplit("/", 1)[0] or "/")
        except UrlError:
            continue
    return normalise_roots(folders)
