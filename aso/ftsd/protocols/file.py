"""``file://`` URLs (local paths; real FTS3 refuses them, aso fts-server does not)."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit

from aso.ftsd.checksum import adler32_of_file
from aso.ftsd.protocols.base import CopyError, Destination, Source


def path_of(url: str) -> str:
    return unquote(urlsplit(url).path)


class FileSource(Source):
    def __init__(self, url: str):
        self.url = url
        self.path = path_of(url)

    def size(self, full_read_next: bool = False) -> int:
        try:
            return os.stat(self.path).st_size
        except OSError as exc:
            raise CopyError.from_os("SOURCE", exc, f"cannot stat {self.path}") from None

    def local_path(self) -> str:
        return self.path

    def read_from(self, offset: int, buffer_size: int) -> Iterator[memoryview]:
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


#: bytes per copy_file_range call: progress is reported (and interrupts seen) at this pace
KERNEL_COPY_CHUNK = 64 * 1024 * 1024
_NO_KERNEL_COPY = (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP)


class FileDestination(Destination):
    resumable = True

    def __init__(self, url: str, part_name: str, durable: bool = True):
        self.durable = durable
        self.url = url
        self.path = path_of(url)
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
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            fd = os.open(self.part, os.O_WRONLY | os.O_CREAT, 0o644)
            # Never truncate below `offset`: what an earlier attempt wrote up to there stays.
            os.ftruncate(fd, offset)
            os.lseek(fd, offset, os.SEEK_SET)
        except OSError as exc:
            raise CopyError.from_os("DESTINATION", exc, f"cannot create {self.part}") from None
        self._fd = fd
        return fd

    def _close_part(self, fd: int, complete: bool) -> None:
        try:
            if complete and self.durable:
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
        dir_fd = os.open(os.path.dirname(self.path), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            os.unlink(self.part)

    def adler32(self) -> str:
        target = self.part if os.path.exists(self.part) else self.path
        return adler32_of_file(target)
