"""The interface every protocol plug-in implements.

A copy reads a :class:`Source` from an offset and writes a :class:`Destination` that keeps
a partial file under a temporary name, so an interrupted copy can resume from what was
written and a failed one never leaves a half file at the destination path.
"""

from __future__ import annotations

import errno
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator


class CopyError(Exception):
    """A failure in FTS3's terms: scope (SOURCE, DESTINATION, TRANSFER), errno, text."""

    def __init__(self, scope: str, code: int, message: str, recoverable: bool = True):
        self.scope = scope
        self.code = code
        self.message = message
        self.recoverable = recoverable
        super().__init__(self.reason)

    @property
    def reason(self) -> str:
        return f"{self.scope} [{self.code}] {self.message}"

    @classmethod
    def from_os(cls, scope: str, exc: OSError, what: str) -> CopyError:
        code = exc.errno or errno.EIO
        permanent = code in (errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR)
        return cls(scope, code, f"{what}: {os.strerror(code)}", recoverable=not permanent)


class Source(ABC):
    url: str

    @abstractmethod
    def size(self, full_read_next: bool = False) -> int:
        """Size in bytes; CopyError(SOURCE, 2) when the file does not exist.
        ``full_read_next``: the caller reads from offset 0 next (a plug-in may start that read now)."""

    @abstractmethod
    def read_from(self, offset: int, buffer_size: int) -> Iterator[bytes | memoryview]:
        """Chunks from ``offset`` to the end."""

    def local_path(self) -> str | None:
        """A path on this machine when the source is a local file (enables kernel copies)."""
        return None

    def close(self) -> None:  # noqa: B027 - optional
        pass


class Destination(ABC):
    url: str
    #: False where a partial write cannot be continued (e.g. an HTTP PUT)
    resumable: bool = False
    #: the destination's checksum is that of the bytes ``write`` was given (a local file);
    #: False: ask the storage (:meth:`adler32`)
    checksum_of_written: bool = False
    #: after :meth:`commit`: a path whose file system the caller must sync before the copy is
    #: durable (a destination made with ``sync_later``); None: durable already
    needs_sync: str | None = None

    @abstractmethod
    def exists(self) -> bool:
        """Whether a complete file is at the destination path."""

    @abstractmethod
    def size(self) -> int:
        """Size of the complete file at the destination path."""

    @abstractmethod
    def partial_size(self) -> int:
        """Bytes already written by an earlier, interrupted attempt (0 if none)."""

    def sync(self) -> None:  # noqa: B027 - optional
        """Make what ``write`` has written so far durable (called before a checkpoint)."""

    @abstractmethod
    def write(self, chunks: Iterator[bytes | memoryview], offset: int, on_progress) -> int:
        """Write ``chunks`` starting at ``offset``; call ``on_progress(total_written)``."""

    def copy_from_path(self, path: str, offset: int, on_progress) -> int | None:
        """Copy the local file ``path`` from ``offset`` inside the kernel, as ``write`` would;
        None when this destination cannot (the caller then streams through ``write``)."""
        return None

    @abstractmethod
    def commit(self, overwrite: bool) -> None:
        """Make the written data the destination file (atomic rename)."""

    def committed_earlier(self) -> None:  # noqa: B027 - optional
        """The destination file was committed by an attempt that stopped before recording it."""

    @abstractmethod
    def discard(self) -> None:
        """Remove what an attempt wrote."""

    @abstractmethod
    def adler32(self) -> str:
        """adler32 of the data at the destination as the storage has it (its own checksum
        where it gives one, else read back; the partial file while it exists, else the
        committed file)."""

    def close(self) -> None:  # noqa: B027 - optional
        pass
