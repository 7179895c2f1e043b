"""``file://`` URLs (local paths; real FTS3 refuses them, aso fts-server does not).

The path is :func:`aso.ftsd.urls.file_path` of the URL, the very path submission checked,
and it must lie under the service's roots twice: as written, and with every symlink
resolved just before the file is opened (a link out of a root is a permanent failure).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
from collections.abc import Iterator, Sequence

from aso.ftsd import urls
from aso.ftsd.checksum import adler32_of_file
from aso.ftsd.protocols.base import CopyError, Destination, Source


def path_of(url: str, scope: str = "SOURCE") -> str:
    """The local path of a file:// URL (decoded once, normalised); CopyError if refused."""
    try:
        return urls.file_path(url)
    except urls.UrlError as exc:
        raise CopyError(scope, errno.EINVAL, f"{url[:200]!r} {exc}", recoverable=False) from None


def check_roots(path: str, roots: Sequence[str], scope: str) -> None:
    """``path`` lies under ``roots`` as written and with its symlinks resolved (for a file
    not there yet: its nearest existing folder); else a permanent CopyError."""
    if not urls.under_roots(path, roots):
        raise CopyError(scope, errno.EACCES, f"{path}: {urls.refused_root_message(roots)}", recoverable=False)
    if not urls.real_path_under_roots(path, roots):
        raise CopyError(scope, errno.EACCES, f"{path} resolves (through a symbolic link) to {os.path.realpath(path)},"
                        " outside the service's roots", recoverable=False)


class FileSource(Source):
    """``nearline``: the file is on an emulated tape and not online (aso.ftsd.staging): it
    exists, but any attempt to read it fails as a tape system's disk buffer would."""

    def __init__(self, url: str, roots: Sequence[str] = (), nearline: bool = False):
        self.url = url
        self.roots = tuple(roots)
        self.path = path_of(url, "SOURCE")
        self.nearline = nearline
        check_roots(self.path, self.roots, "SOURCE")

    def _online(self) -> None:
        if self.nearline:
            from aso.ftsd.staging import NEARLINE_ERRNO, nearline_message

            raise CopyError("SOURCE", NEARLINE_ERRNO, nearline_message(self.path), recoverable=False)

    def size(self, full_read_next: bool = False) -> int:
        self._online()
        try:
            return os.stat(self.path).st_size
        except OSError as exc:
            raise CopyError.from_os("SOURCE", exc, f"cannot stat {self.path}") from None

    def local_path(self) -> str:
        self._online()
        check_roots(self.path, self.roots, "SOURCE")
        return self.path

    def read_from(self, offset: int, buffer_size: int) -> Iterator[memoryview]:
        self._online()
        check_roots(self.path, self.roots, "SOURCE")
        try:
            fh = open(self.path, "rb", buffering=0)  # noqa: SIM115 - closed by the with below
        except OSError as exc:
            raise CopyError.from_os("SOURCE", exc, f"cannot open {self.path}") from None
        buf = bytearray(buffer_size)
        view = memoryview(buf)
        with fh:
            fh.seek(offset)
            while True:
                n = fh.readinto(buf)
                if not n:
                    return
                yield view[:n]


@functools.cache
def _syncfs():
    """libc's syncfs, looked up once (None where the C library has none)."""
    import ctypes

    return getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)


def sync_file_systems(paths) -> None:
    """Make everything written under these paths durable: one ``syncfs`` per file system
    (the data and the renames of every file copied there since), else ``sync``.
    Raises OSError."""
    import ctypes

    seen: set[int] = set()
    syncfs = _syncfs()
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            dev = os.fstat(fd).st_dev
            if dev in seen:
                continue
            seen.add(dev)
            if syncfs is None:
                os.sync()
            elif syncfs(fd) != 0:
                code = ctypes.get_errno()
                raise OSError(code, os.strerror(code), path)
        finally:
            os.close(fd)


#: bytes per copy_file_range call: progress is reported (and interrupts seen) at this pace
KERNEL_COPY_CHUNK = 64 * 1024 * 1024
_NO_KERNEL_COPY = (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP)


class FileDestination(Destination):
    resumable = True
    checksum_of_written = True

    def __init__(self, url: str, part_name: str, durable: bool = True, roots: Sequence[str] = (),
                 sync_later: bool = False):
        self.durable = durable
        self.sync_later = sync_later and durable
        self.url = url
        self.roots = tuple(roots)
        self.path = path_of(url, "DESTINATION")
        check_roots(self.path, self.roots, "DESTINATION")
        # Deterministic per file so that a restarted service finds its partial copy.
        self.part = os.path.join(os.path.dirname(self.path), f".{os.path.basename(self.path)}.{part_name}.part")
        self._fd: int | None = None

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def size(self) -> int:
        try:
            return os.stat(self.path).st_size
        except OSError as exc:
            raise CopyError.from_os("DESTINATION", exc, f"cannot stat {self.path}") from None

    def partial_size(self) -> int:
        try:
            return os.stat(self.part).st_size
        except (FileNotFoundError, NotADirectoryError):
            return 0  # no partial copy (the folder may not even be creatable: write() says why)

    def sync(self) -> None:
        if self._fd is not None and self.durable:
            os.fdatasync(self._fd)

    def _open_part(self, offset: int) -> int:
        check_roots(self.path, self.roots, "DESTINATION")
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            check_roots(self.path, self.roots, "DESTINATION")  # the folders made may be links now
            # never through a link planted under the partial file's name
            fd = os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            # Never truncate below `offset`: what an earlier attempt wrote up to there stays.
            os.ftruncate(fd, offset)
            os.lseek(fd, offset, os.SEEK_SET)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise CopyError("DESTINATION", errno.ELOOP, f"{self.part} is a symbolic link", recoverable=False) from None
            raise CopyError.from_os("DESTINATION", exc, f"cannot create {self.part}") from None
        self._fd = fd
        return fd

    def _close_part(self, fd: int, complete: bool) -> None:
        try:
            if complete and self.durable and not self.sync_later:
                os.fsync(fd)
        finally:
            self._fd = None
            os.close(fd)

    def copy_from_path(self, path: str, offset: int, on_progress) -> int | None:
        try:
            src = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise CopyError.from_os("SOURCE", exc, f"cannot open {path}") from None
        try:
            fd = self._open_part(offset)
        except CopyError:
            os.close(src)
            raise
        written, complete = offset, False
        try:
            while True:
                try:
                    n = os.copy_file_range(src, fd, KERNEL_COPY_CHUNK, offset_src=written)
                except OSError as exc:
                    if written == offset and exc.errno in _NO_KERNEL_COPY:
                        return None  # e.g. across file systems on an older kernel: stream instead
                    raise CopyError.from_os("DESTINATION", exc, f"write to {self.part} failed") from None
                if not n:
                    break
                written += n
                on_progress(written)
            complete = True
        finally:
            os.close(src)
            self._close_part(fd, complete)
        return written

    def write(self, chunks, offset: int, on_progress) -> int:
        fd = self._open_part(offset)
        written, complete = offset, False
        try:
            for chunk in chunks:
                try:
                    view = memoryview(chunk)
                    while view:
                        n = os.write(fd, view)
                        view = view[n:]
                        written += n
                except OSError as exc:
                    raise CopyError.from_os("DESTINATION", exc, f"write to {self.part} failed") from None
                on_progress(written)
            complete = True
        finally:
            self._close_part(fd, complete)
        return written

    def commit(self, overwrite: bool) -> None:
        if not overwrite and os.path.exists(self.path):
            raise CopyError("DESTINATION", errno.EEXIST, "Destination file exists and overwrite is not enabled", recoverable=False)
        os.replace(self.part, self.path)
        if not self.durable:
            return
        if self.sync_later:
            self.needs_sync = os.path.dirname(self.path)
            return
        dir_fd = os.open(os.path.dirname(self.path), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def committed_earlier(self) -> None:
        if self.sync_later:
            self.needs_sync = os.path.dirname(self.path)

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            os.unlink(self.part)

    def adler32(self) -> str:
        target = self.part if os.path.exists(self.part) else self.path
        return adler32_of_file(target)


def delete_file(url: str, roots: Sequence[str] = ()) -> bool:
    """Unlink the local file of ``url`` (checked against the roots, symlinks resolved, as a
    copy would be); False when it is not there."""
    path = path_of(url, "DESTINATION")
    check_roots(path, roots, "DESTINATION")
    try:
        os.unlink(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        raise CopyError.from_os("DESTINATION", exc, f"cannot delete {path}") from None
    return True
