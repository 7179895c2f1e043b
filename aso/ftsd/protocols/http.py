"""``http://`` and ``https://``: reads with Range (so a copy resumes), writes with PUT."""

from __future__ import annotations

import contextlib
import errno
import http.client
import re
import ssl
import threading
import zlib
from collections.abc import Iterator
from urllib.parse import urlsplit

import requests

from aso.ftsd.protocols.base import CopyError, Destination, Source

_STATUS_ERRNO = {404: errno.ENOENT, 403: errno.EACCES, 401: errno.EACCES, 507: errno.ENOSPC}


def _error(scope: str, response: requests.Response, what: str) -> CopyError:
    code = _STATUS_ERRNO.get(response.status_code, errno.EIO)
    permanent = response.status_code in (401, 403, 404)
    return CopyError(scope, code, f"{what}: HTTP {response.status_code} {response.reason}", recoverable=not permanent)


_local = threading.local()


def _session() -> requests.Session:
    """One session per worker thread for uploads: connections are kept alive across files."""
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
    return session


class _Response:
    """What a source needs of an http.client response."""

    def __init__(self, status: int, reason: str, headers):
        self.status_code = status
        self.reason = reason
        self.headers = headers


class HttpSource(Source):
    """Reads with the standard library's http.client on a kept-alive connection per worker
    thread: requests costs about three times more CPU per small file, which is what limits
    many-small-file copies."""

    def __init__(self, url: str, timeout: float = 60.0):
        self.url = url
        self.timeout = timeout
        parts = urlsplit(url)
        self._key = (parts.scheme, parts.hostname, parts.port)
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._host_header = parts.netloc.rsplit("@", 1)[-1]
        # size() may open the GET that a read from offset 0 then continues, saving a HEAD per file
        self._pending: http.client.HTTPResponse | None = None

    def _connection(self, fresh: bool = False) -> http.client.HTTPConnection:
        pool = getattr(_local, "connections", None)
        if pool is None:
            pool = _local.connections = {}
        conn = pool.get(self._key)
        if conn is not None and fresh:
            conn.close()
            conn = None
        if conn is None:
            scheme, host, port = self._key
            if scheme == "https":
                conn = http.client.HTTPSConnection(host, port, timeout=self.timeout, context=ssl.create_default_context())
            else:
                conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
            pool[self._key] = conn
        return conn

    def _request(self, method: str, offset: int = 0) -> http.client.HTTPResponse:
        headers = {"Host": self._host_header, "User-Agent": "aso-fts-server"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        for attempt in (0, 1):
            conn = self._connection(fresh=attempt > 0)
            try:
                conn.request(method, self._target, headers=headers)
                return conn.getresponse()
            except (http.client.HTTPException, ConnectionError) as exc:
                # a kept-alive connection the server has closed meanwhile: retry once on a new one
                if attempt:
                    raise CopyError("SOURCE", errno.EHOSTUNREACH, f"cannot reach {self.url}: {exc}") from None
            except OSError as exc:
                conn.close()
                raise CopyError("SOURCE", errno.EHOSTUNREACH, f"cannot reach {self.url}: {exc}") from None
        raise AssertionError("unreachable")

    def _size_of(self, r: http.client.HTTPResponse) -> int:
        try:
            return int(r.headers["Content-Length"])
        except (KeyError, TypeError, ValueError):
            raise CopyError("SOURCE", errno.EIO, f"{self.url}: no Content-Length") from None

    def _refuse(self, r: http.client.HTTPResponse, what: str) -> CopyError:
        r.close()
        return _error("SOURCE", _Response(r.status, r.reason, r.headers), what)

    def size(self, full_read_next: bool = False) -> int:
        self.close()
        r = self._request("GET" if full_read_next else "HEAD")
        if r.status != 200:
            raise self._refuse(r, f"cannot stat {self.url}")
        try:
            size = self._size_of(r)
        except CopyError:
            r.close()
            raise
        if full_read_next:
            self._pending = r
        else:
            r.read()
        return size

    def read_from(self, offset: int, buffer_size: int) -> Iterator[memoryview]:
        if offset == 0 and self._pending is not None:
            r, self._pending = self._pending, None
        else:
            self.close()
            r = self._request("GET", offset)
            if offset and r.status != 206:
                r.close()
                raise CopyError("SOURCE", errno.EIO, f"{self.url} does not honour Range (HTTP {r.status})")
            if not offset and r.status != 200:
                raise self._refuse(r, f"cannot read {self.url}")
        buf = bytearray(buffer_size)
        view = memoryview(buf)
        try:
            while True:
                try:
                    n = r.readinto(buf)
                except (http.client.HTTPException, OSError) as exc:
                    raise CopyError("TRANSFER", errno.ECONNRESET, f"reading {self.url} failed: {exc}") from None
                if not n:
                    break
                yield view[:n]
        finally:
            if not r.isclosed():
                r.close()
                self._connection(fresh=True)  # the connection is mid-body: start over next time

    def close(self) -> None:
        if self._pending is not None:
            self._pending.close()
            self._pending = None
            self._connection(fresh=True)


def delete_http(url: str, timeout: float = 60.0) -> bool:
    """HTTP DELETE of ``url``; False when the storage has no such file (404)."""
    try:
        r = _session().delete(url, timeout=timeout)
    except requests.RequestException as exc:
        raise CopyError("DESTINATION", errno.EHOSTUNREACH, f"DELETE {url} failed: {exc}") from None
    if r.status_code == 404:
        return False
    if r.status_code not in (200, 202, 204):
        raise _error("DESTINATION", r, f"DELETE {url}")
    return True


class HttpDestination(Destination):
    """An HTTP PUT cannot be continued, so an interrupted copy starts again from zero."""

    resumable = False

    def __init__(self, url: str, timeout: float = 60.0):
        self.url = url
        self.timeout = timeout
        self.session = _session()
        self._done = False

    def exists(self) -> bool:
        try:
            return self.session.head(self.url, timeout=self.timeout).status_code == 200
        except requests.RequestException as exc:
            raise CopyError("DESTINATION", errno.EHOSTUNREACH, f"cannot reach {self.url}: {exc}") from None

    def size(self) -> int:
        try:
            r = self.session.head(self.url, timeout=self.timeout, allow_redirects=True)
        except requests.RequestException as exc:
            raise CopyError("DESTINATION", errno.EHOSTUNREACH, f"cannot reach {self.url}: {exc}") from None
        if r.status_code != 200:
            raise _error("DESTINATION", r, f"cannot stat {self.url}")
        try:
            return int(r.headers["Content-Length"])
        except (KeyError, ValueError):
            raise CopyError("DESTINATION", errno.EIO, f"{self.url}: no Content-Length") from None

    def partial_size(self) -> int:
        return 0

    def write(self, chunks, offset: int, on_progress) -> int:
        written = 0

        def body():
            nonlocal written
            for chunk in chunks:
                written += len(chunk)
                on_progress(written)
                yield bytes(chunk)

        try:
            r = self.session.put(self.url, data=body(), timeout=self.timeout)
        except requests.RequestException as exc:
            raise CopyError("DESTINATION", errno.ECONNRESET, f"PUT {self.url} failed: {exc}") from None
        if r.status_code not in (200, 201, 204):
            raise _error("DESTINATION", r, f"PUT {self.url}")
        self._done = True
        return written

    def commit(self, overwrite: bool) -> None:
        # The PUT already replaced the file; the overwrite check happened before writing.
        if not self._done:
            raise CopyError("DESTINATION", errno.EIO, "nothing was written")

    def discard(self) -> None:
        with contextlib.suppress(requests.RequestException):
            self.session.delete(self.url, timeout=self.timeout)

    def adler32(self) -> str:
        # The storage's own checksum (RFC 3230 Want-Digest, as FTS3's gfal2 asks dCache, EOS
        # and StoRM), else read back what it stored: the checksum of what was sent proves nothing.
        stored = self._digest()
        if stored is not None:
            return stored
        value = 1
        try:
            with self.session.get(self.url, stream=True, timeout=self.timeout) as r:
                if r.status_code != 200:
                    raise _error("DESTINATION", r, f"cannot read back {self.url}")
                for chunk in r.iter_content(chunk_size=1024 * 1024):
                    value = zlib.adler32(chunk, value)
        except requests.RequestException as exc:
            raise CopyError("DESTINATION", errno.ECONNRESET, f"reading back {self.url} failed: {exc}") from None
        return f"{value & 0xFFFFFFFF:08x}"

    def _digest(self) -> str | None:
        """adler32 from a ``Digest: adler32=<hex>`` answer to HEAD with ``Want-Digest``."""
        try:
            r = self.session.head(self.url, headers={"Want-Digest": "adler32"}, timeout=self.timeout)
        except requests.RequestException:
            return None
        if r.status_code != 200:
            return None
        for part in (r.headers.get("Digest") or "").split(","):
            name, _, value = part.strip().partition("=")
            if name.strip().lower() == "adler32" and re.fullmatch(r"[0-9A-Fa-f]{1,8}", value.strip()):
                return value.strip().lower().rjust(8, "0")
        return None

