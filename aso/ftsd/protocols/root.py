"""``root://`` (XRootD) through the official Python bindings (PyPI ``xrootd``).

The service streams: it reads the source and writes the destination itself, as it does for
the other protocols (no third-party copy). Reads are pipelined (several large reads in
flight at once) and so are writes, which is what makes a copy keep up with ``xrdcp``.

The destination is a partial file next to the final one, ``.<name>.<file id>.part``, on the
XRootD server: a copy that stops keeps it, and the next attempt continues from its size
(never beyond the last checkpoint). The copy becomes the file by a rename on the server
(``mv``), and the destination's adler32 is the server's own (``query checksum``; servers
configured with ``xrootd.chksum adler32``), else the file is read back.

Connections are the XRootD client's: it keeps one per host and port for the whole process
and multiplexes every copy to that server over it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import posixpath
import threading
import zlib
from collections import deque
from collections.abc import Iterator

from aso.ftsd import urls
from aso.ftsd.protocols.base import CopyError, Destination, Source

try:
    from XRootD import client
    from XRootD.client.flags import AccessMode, OpenFlags, QueryCode, StatInfoFlags
except ImportError:  # pragma: no cover - exercised only where the extra is missing
    client = None

log = logging.getLogger("aso.fts.root")

#: bytes per read request, at least (a larger buffer_size asks for more)
READ_CHUNK = 8 * 1024 * 1024
#: read (and write) requests in flight per copy
DEPTH = 4

# kXR error numbers (XProtocol.hh) that a server answers with, as errno values
_SERVER_ERRNO = {
    3000: errno.EINVAL,        # kXR_ArgInvalid
    3001: errno.EINVAL,        # kXR_ArgMissing
    3002: errno.ENAMETOOLONG,  # kXR_ArgTooLong
    3003: errno.EBUSY,         # kXR_FileLocked
    3004: errno.EBADF,         # kXR_FileNotOpen
    3005: errno.EIO,           # kXR_FSError
    3006: errno.EINVAL,        # kXR_InvalidRequest
    3007: errno.EIO,           # kXR_IOError
    3008: errno.ENOMEM,        # kXR_NoMemory
    3009: errno.ENOSPC,        # kXR_NoSpace
    3010: errno.EACCES,        # kXR_NotAuthorized
    3011: errno.ENOENT,        # kXR_NotFound
    3012: errno.EIO,           # kXR_ServerError
    3013: errno.ENOTSUP,       # kXR_Unsupported
    3014: errno.EHOSTUNREACH,  # kXR_noserver
    3015: errno.EISDIR,        # kXR_NotFile
    3016: errno.EISDIR,        # kXR_isDirectory
    3017: errno.ECANCELED,     # kXR_Cancelled
    3018: errno.EEXIST,        # kXR_ItExists
    3019: errno.EIO,           # kXR_ChkSumErr
    3020: errno.EINPROGRESS,   # kXR_inProgress
    3021: errno.EDQUOT,        # kXR_overQuota
    3024: errno.EBUSY,         # kXR_Overloaded
    3025: errno.EROFS,         # kXR_fsReadOnly
    3030: errno.EACCES,        # kXR_AuthFailed
    3034: errno.ETIMEDOUT,     # kXR_ReqTimedOut
    3035: errno.ETIMEDOUT,     # kXR_TimerExpired
}

# the client's own status codes (XrdClStatus.hh) for what went wrong on this side
_CLIENT_ERRNO = {
    101: errno.EHOSTUNREACH,   # errInvalidAddr: the name does not resolve
    102: errno.ECONNRESET,     # errSocketError
    103: errno.ETIMEDOUT,      # errSocketTimeout
    104: errno.ECONNRESET,     # errSocketDisconnected
    107: errno.ECONNRESET,     # errStreamDisconnect
    108: errno.ECONNREFUSED,   # errConnectionError
    110: errno.EPROTO,         # errTlsError
    202: errno.EPROTO,         # errHandShakeFailed
    203: errno.EACCES,         # errLoginFailed
    204: errno.EACCES,         # errAuthFailed
    205: errno.ENOTSUP,        # errQueryNotSupported
    206: errno.ETIMEDOUT,      # errOperationExpired
    207: errno.EINTR,          # errOperationInterrupted
    304: errno.ENOENT,         # errNotFound
    305: errno.EIO,            # errCheckSumError
    306: errno.ELOOP,          # errRedirectLimit
}
_ERROR_RESPONSE = 400  # errErrorResponse: the server answered with a kXR error number
_OS_ERROR = 12  # errOSError: errno is the local system's

#: failures that a retry cannot mend
PERMANENT = frozenset({errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.EINVAL,
                       errno.ENAMETOOLONG, errno.EROFS, errno.ENOTSUP, errno.ELOOP})


def errno_of(status) -> int:
    """The errno a failed XRootD status stands for (EIO when nothing closer is known)."""
    code = getattr(status, "code", 0)
    number = getattr(status, "errno", 0) or 0
    if code == _ERROR_RESPONSE:
        return _SERVER_ERRNO.get(number, errno.EIO)
    if code == _OS_ERROR and 0 < number < 4096:
        return number
    return _CLIENT_ERRNO.get(code, errno.EIO)


def copy_error(scope: str, status, what: str) -> CopyError:
    """A failed XRootD status as a CopyError: a real errno, the server's words, and
    recoverable unless a retry cannot help (no such file, permission, a bad name)."""
    code = errno_of(status)
    detail = " ".join(str(getattr(status, "message", "") or "").split())
    detail = detail.replace("[ERROR] ", "").replace("Server responded with an error: ", "")
    text = f"{what}: {os.strerror(code)}" + (f" ({detail})" if detail else "")
    return CopyError(scope, code, text, recoverable=code not in PERMANENT)


def _check(status, scope: str, what: str) -> None:
    if not status.ok:
        raise copy_error(scope, status, what)


def _missing(status) -> bool:
    return not status.ok and errno_of(status) == errno.ENOENT


_configured = threading.Lock()
_ready = False


def _client():
    """The XRootD client module, configured once per process: timeouts are checked every
    second (the default 15 s would stretch every timeout), and a server that does not
    answer fails a copy at once (a refused connection) or within 10 s, not after the
    default five attempts of two minutes each: the failed copy is retried by the service."""
    global _ready
    if client is None:
        raise CopyError("TRANSFER", errno.ENOTSUP, "root:// needs the XRootD Python bindings (pip install 'aso[xrootd]')",
                        recoverable=False)
    if not _ready:
        with _configured:
            if not _ready:
                client.EnvPutInt("TimeoutResolution", 1)
                client.EnvPutInt("ConnectionWindow", 10)
                client.EnvPutInt("ConnectionRetry", 1)
                _ready = True
    return client


def _seconds(timeout: float) -> int:
    """XRootD takes whole seconds (0 would mean its own default)."""
    return max(1, min(65535, math.ceil(timeout)))


def _parts(url: str, scope: str) -> tuple[str, str]:
    try:
        return urls.root_parts(url)
    except urls.UrlError as exc:
        raise CopyError(scope, errno.EINVAL, f"{url[:200]!r} {exc}", recoverable=False) from None


_local = threading.local()


def _filesystem(endpoint: str):
    """One FileSystem object per server and worker thread (the connection under it is
    shared by the whole process anyway)."""
    cache = getattr(_local, "filesystems", None)
    if cache is None:
        cache = _local.filesystems = {}
    fs = cache.get(endpoint)
    if fs is None:
        fs = cache[endpoint] = _client().FileSystem(endpoint)
    return fs


class _Pending:
    """One asynchronous request: its callback runs on an XRootD thread, the copy waits."""

    __slots__ = ("done", "status", "data", "keep")

    def __init__(self, keep: bytes | None = None) -> None:
        self.done = threading.Event()
        self.status = None
        self.data = None
        #: a write's buffer: the bindings hand the client its address without holding a
        #: reference, so it must outlive the request
        self.keep = keep

    def __call__(self, status, response, hostlist=None) -> None:
        self.status, self.data = status, response
        self.done.set()
        self.keep = None

    def wait(self, seconds: float) -> None:
        # XRootD expires the request itself after its timeout; this margin only guards
        # against a callback that never comes
        if not self.done.wait(seconds + 30):
            raise CopyError("TRANSFER", errno.ETIMEDOUT, f"no answer from the XRootD client in {seconds + 30:.0f} s")


def _url(endpoint: str, path: str) -> str:
    return f"{endpoint}/{path}"  # root://host:port//abs/path


class RootSource(Source):
    def __init__(self, url: str, timeout: float = 60.0):
        self.url = url
        self.endpoint, self.path = _parts(url, "SOURCE")
        self.timeout = _seconds(timeout)
        self._file = None
        self._size: int | None = None

    def _open(self):
        if self._file is None:
            f = _client().File()
            status, _ = f.open(_url(self.endpoint, self.path), OpenFlags.READ, timeout=self.timeout)
            _check(status, "SOURCE", f"cannot open {self.url}")
            self._file = f
        return self._file

    def size(self, full_read_next: bool = False) -> int:
        # opening answers with the file's stat as well: one round trip gives the size and
        # the open file the copy then reads
        f = self._open()
        status, info = f.stat(timeout=self.timeout)
        _check(status, "SOURCE", f"cannot stat {self.url}")
        if info.flags & StatInfoFlags.IS_DIR:
            raise CopyError("SOURCE", errno.EISDIR, f"{self.url} is a folder", recoverable=False)
        self._size = int(info.size)
        return self._size

    def read_from(self, offset: int, buffer_size: int) -> Iterator[bytes]:
        end = self._size if self._size is not None else self.size()
        f = self._open()
        chunk = max(buffer_size, READ_CHUNK)
        pending: deque[tuple[int, int, _Pending]] = deque()
        next_offset = offset
        try:
            while True:
                while len(pending) < DEPTH and next_offset < end:
                    length = min(chunk, end - next_offset)
                    handler = _Pending()
                    status = f.read(next_offset, length, timeout=self.timeout, callback=handler)
                    _check(status, "SOURCE", f"cannot read {self.url}")
                    pending.append((next_offset, length, handler))
                    next_offset += length
                if not pending:
                    return
                at, length, handler = pending.popleft()
                handler.wait(self.timeout)
                if not handler.status.ok:
                    raise copy_error("TRANSFER", handler.status, f"reading {self.url} at byte {at} failed")
                data = handler.data or b""
                if data:
                    yield data
                if len(data) < length:
                    return  # the file is shorter than it was: the size check says so
        finally:
            for _at, _length, handler in pending:
                handler.done.wait(self.timeout + 30)  # no buffer is freed under a read in flight

    def close(self) -> None:
        f, self._file = self._file, None
        if f is not None and f.is_open():
            # a read-only file: nobody needs the answer, so the copy does not wait a round
            # trip for it (the File object is kept until the answer came)
            f.close(timeout=self.timeout, callback=lambda *_answer, _keep=f: None)


class RootDestination(Destination):
    resumable = True
    checksum_of_written = False

    def __init__(self, url: str, part_name: str, timeout: float = 60.0, durable: bool = True):
        self.url = url
        #: sync the partial file on the server before a checkpoint counts its bytes
        self.durable = durable
        self.endpoint, self.path = _parts(url, "DESTINATION")
        self.timeout = _seconds(timeout)
        folder, name = posixpath.split(self.path)
        # deterministic per file, so that a restarted service finds its partial copy
        self.part = posixpath.join(folder, f".{name}.{part_name}.part")
        self._file = None
        self._inflight: deque[_Pending] = deque()

    @property
    def _fs(self):
        return _filesystem(self.endpoint)

    def _stat(self, path: str):
        status, info = self._fs.stat(path, timeout=self.timeout)
        if _missing(status):
            return None
        _check(status, "DESTINATION", f"cannot stat {self.endpoint}/{path}")
        return info

    def exists(self) -> bool:
        return self._stat(self.path) is not None

    def size(self) -> int:
        info = self._stat(self.path)
        if info is None:
            raise CopyError("DESTINATION", errno.ENOENT, f"cannot stat {self.url}: {os.strerror(errno.ENOENT)}",
                            recoverable=False)
        return int(info.size)

    def partial_size(self) -> int:
        info = self._stat(self.part)
        return 0 if info is None else int(info.size)

    def _open_part(self, offset: int):
        f = _client().File()
        target = _url(self.endpoint, self.part)
        mode = AccessMode.UR | AccessMode.UW | AccessMode.GR | AccessMode.OR
        if offset:
            status, _ = f.open(target, OpenFlags.UPDATE, mode, timeout=self.timeout)
            _check(status, "DESTINATION", f"cannot open {target}")
            # never below `offset`: what an earlier attempt wrote up to there stays
            status, _ = f.truncate(offset, timeout=self.timeout)
            _check(status, "DESTINATION", f"cannot truncate {target}")
        else:
            status, _ = f.open(target, OpenFlags.DELETE | OpenFlags.MAKEPATH, mode, timeout=self.timeout)
            _check(status, "DESTINATION", f"cannot create {target}")
        self._file = f
        return f

    def _settle(self, keep: int) -> None:
        """Wait until at most ``keep`` writes are in flight; CopyError if one failed."""
        while len(self._inflight) > keep:
            handler = self._inflight.popleft()
            handler.wait(self.timeout)
            if not handler.status.ok:
                raise copy_error("DESTINATION", handler.status, f"write to {self.endpoint}/{self.part} failed")

    def sync(self) -> None:
        if self._file is None:
            return
        self._settle(0)
        if not self.durable:
            return
        status, _ = self._file.sync(timeout=self.timeout)
        _check(status, "DESTINATION", f"sync of {self.endpoint}/{self.part} failed")

    def write(self, chunks, offset: int, on_progress) -> int:
        f = self._open_part(offset)
        written, complete = offset, False
        try:
            for chunk in chunks:
                # the bindings take bytes only (a source's reused buffer is copied here,
                # so it may be refilled while this write is in flight)
                data = chunk if isinstance(chunk, bytes) else bytes(chunk)
                if not data:
                    continue
                self._settle(DEPTH - 1)
                handler = _Pending(keep=data)
                status = f.write(data, written, len(data), timeout=self.timeout, callback=handler)
                _check(status, "DESTINATION", f"write to {self.endpoint}/{self.part} failed")
                self._inflight.append(handler)
                written += len(data)
                on_progress(written)
            # Once closed, the file is the storage's to keep, as with an HTTP PUT (FTS3
            # leaves it to the storage too): a sync per file would halve small-file copies.
            self._settle(0)
            complete = True
        finally:
            self._close_part(complete)
        return written

    def _close_part(self, complete: bool) -> None:
        f, self._file = self._file, None
        if f is None:
            return
        try:
            self._settle(0)
        except CopyError:
            if complete:
                raise
        finally:
            # after a failed write the others may still be in flight: their buffers stay
            # referenced until each has its answer
            for handler in self._inflight:
                handler.done.wait(self.timeout + 30)
            self._inflight.clear()
            status, _ = f.close(timeout=self.timeout)
        if complete:
            _check(status, "DESTINATION", f"closing {self.endpoint}/{self.part} failed")

    def commit(self, overwrite: bool) -> None:
        if not overwrite and self.exists():
            raise CopyError("DESTINATION", errno.EEXIST, "Destination file exists and overwrite is not enabled",
                            recoverable=False)
        # a rename on the server replaces the file at the destination path (overwrite)
        status, _ = self._fs.mv(self.part, self.path, timeout=self.timeout)
        _check(status, "DESTINATION", f"cannot rename {self.part} to {self.path} on {self.endpoint}")

    def discard(self) -> None:
        status, _ = self._fs.rm(self.part, timeout=self.timeout)
        if not status.ok and not _missing(status):
            # best effort: the next attempt truncates or reuses what is left
            log.warning("%s", copy_error("DESTINATION", status, f"cannot remove {self.endpoint}/{self.part}").reason)

    def adler32(self) -> str:
        target = self.part if self._stat(self.part) is not None else self.path
        stored = self._server_adler32(target)
        if stored is not None:
            return stored
        return self._read_back(target)

    def _server_adler32(self, path: str) -> str | None:
        """The server's adler32 of ``path`` (None when it does not compute adler32)."""
        status, response = self._fs.query(QueryCode.CHECKSUM, path, timeout=self.timeout)
        if not status.ok:
            if _missing(status):
                raise copy_error("DESTINATION", status, f"cannot checksum {self.endpoint}/{path}")
            return None
        answer = (response or b"").split(b"\x00", 1)[0].decode("ascii", "replace").split()
        if len(answer) == 2 and answer[0].lower() == "adler32":
            value = answer[1].strip().lower()
            if 0 < len(value) <= 8 and all(c in "0123456789abcdef" for c in value):
                return value.rjust(8, "0")
        return None

    def _read_back(self, path: str) -> str:
        source = RootSource(_url(self.endpoint, path), self.timeout)
        value = 1
        try:
            for chunk in source.read_from(0, READ_CHUNK):
                value = zlib.adler32(chunk, value)
        except CopyError as exc:
            raise CopyError("DESTINATION", exc.code, exc.message, exc.recoverable) from None
        finally:
            source.close()
        return f"{value & 0xFFFFFFFF:08x}"

    def close(self) -> None:
        with contextlib.suppress(CopyError):
            self._close_part(False)


def delete_root(url: str, timeout: float = 60.0) -> bool:
    """Remove the file of a root:// URL; False when there is none."""
    endpoint, path = _parts(url, "DESTINATION")
    status, _ = _filesystem(endpoint).rm(path, timeout=_seconds(timeout))
    if _missing(status):
        return False
    _check(status, "DESTINATION", f"cannot delete {url}")
    return True
