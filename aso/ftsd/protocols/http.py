"""``http://`` and ``https://``: reads with Range (so a copy resumes), writes with PUT."""

from __future__ import annotations

import contextlib
import errno
import zlib
from collections.abc import Iterator

import requests

from aso.ftsd.protocols.base import CopyError, Destination, Source

_STATUS_ERRNO = {404: errno.ENOENT, 403: errno.EACCES, 401: errno.EACCES, 507: errno.ENOSPC}


def _error(scope: str, response: requests.Response, what: str) -> CopyError:
    code = _STATUS_ERRNO.get(response.status_code, errno.EIO)
    permanent = response.status_code in (401, 403, 404)
    return CopyError(scope, code, f"{what}: HTTP {response.status_code} {response.reason}", recoverable=not permanent)


class HttpSource(Source):
    def __init__(self, url: str, timeout: float = 60.0):
        self.url = url
        self.timeout = timeout
        self.session = requests.Session()

    def size(self) -> int:
        try:
            r = self.session.head(self.url, timeout=self.timeout, allow_redirects=True)
        except requests.RequestException as exc:
            raise CopyError("SOURCE", errno.EHOSTUNREACH, f"cannot reach {self.url}: {exc}") from None
        if r.status_code != 200:
            raise _error("SOURCE", r, f"cannot stat {self.url}")
        try:
            return int(r.headers["Content-Length"])
        except (KeyError, ValueError):
            raise CopyError("SOURCE", errno.EIO, f"{self.url}: no Content-Length") from None

    def read_from(self, offset: int, buffer_size: int) -> Iterator[bytes]:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            r = self.session.get(self.url, headers=headers, stream=True, timeout=self.timeout)
        except requests.RequestException as exc:
            raise CopyError("SOURCE", errno.EHOSTUNREACH, f"cannot reach {self.url}: {exc}") from None
        with r:
            if offset and r.status_code != 206:
                raise CopyError("SOURCE", errno.EIO, f"{self.url} does not honour Range (HTTP {r.status_code})")
            if not offset and r.status_code != 200:
                raise _error("SOURCE", r, f"cannot read {self.url}")
            try:
                yield from r.iter_content(chunk_size=buffer_size)
            except requests.RequestException as exc:
                raise CopyError("TRANSFER", errno.ECONNRESET, f"reading {self.url} failed: {exc}") from None

    def close(self) -> None:
        self.session.close()


class HttpDestination(Destination):
    """An HTTP PUT cannot be continued, so an interrupted copy starts again from zero."""

    resumable = False

    def __init__(self, url: str, timeout: float = 60.0):
        self.url = url
        self.timeout = timeout
        self.session = requests.Session()
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
        # Read back what the server stored: the checksum of what was sent proves nothing.
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

    def close(self) -> None:
        self.session.close()
