"""One copy: source plug-in → destination plug-in, resumed, verified, committed.

The order of things follows FTS3's url-copy: refuse an existing destination unless
overwrite, copy into a partial file, check the size, check checksums per the job's mode,
then rename into place. The caller decides what a failure means for the file (retry or not);
this module only says what went wrong, in FTS3's words.

Checksums are computed as the bytes stream through, never by reading a file again when it
can be helped: the source's over what was read, the destination's over what was written
where the destination is a local file (what ``write`` took is what is on the disk, as a
storage that computes its checksum on write would report it), and asked of the storage
otherwise (HTTP: ``Want-Digest``, else read back). ``reread_destination`` reads local
destinations back instead, for those who want the disk itself checked.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from aso.ftsd import checksum as ck
from aso.ftsd.db import CopyTask
from aso.ftsd.protocols import CopyError, Destination, destination_for, source_for

ProgressHook = Callable[[int, Destination], None]


@dataclass(frozen=True)
class CopyResult:
    filesize: int
    #: "ADLER32:xxxxxxxx" when a checksum was computed, else None
    checksum: str | None
    #: byte offset the copy started from (non-zero when it resumed a partial copy)
    resumed_from: int
    #: a path whose file system must be synced before the copy is durable (``sync_later``)
    needs_sync: str | None = None
    #: nothing was copied: a complete, verified copy was already at the destination (an
    #: intermediate hop of a resubmitted multihop job)
    reused: bool = False


def _hashing(chunks: Iterator, digest: ck.Adler32) -> Iterator:
    for chunk in chunks:
        digest.update(chunk)
        yield chunk


def _strict(task: CopyTask) -> bool:
    return str(task.internal.get("strict_copy", "")).lower() in ("1", "true", "y", "yes")


def _already_committed(dst: Destination, size: int) -> bool:
    """After a crash between the rename and the database update: the destination is the
    finished copy when no partial file is left and the sizes agree."""
    return dst.partial_size() == 0 and dst.exists() and dst.size() == size


def _verify_error(problem: str) -> CopyError:
    scope = "SOURCE" if problem.startswith("Source and user") else "DESTINATION" if problem.startswith("Destination") else "TRANSFER"
    # A source that does not match what the user asked for will not match on a retry either.
    return CopyError(scope, errno.EIO, problem, recoverable=scope != "SOURCE")


def run_copy(
    task: CopyTask,
    *,
    buffer_size: int,
    timeout: float,
    on_progress: ProgressHook,
    on_commit: Callable[[int], None],
    durable: bool = True,
    roots: Sequence[str] = (),
    reread_destination: bool = False,
    sync_later: bool = False,
) -> CopyResult:
    """Copy one file. ``on_progress(bytes_written, destination)`` is called per buffer (it may
    raise to interrupt the copy); ``on_commit(size)`` just before the rename, so that a crash
    after it is recognised on the next attempt. ``roots``: where file:// URLs may point.
    Raises CopyError."""
    src = source_for(task.source, timeout, roots=roots, nearline=task.source_nearline)
    try:
        dst = destination_for(task.destination, str(task.file_id), timeout, durable=durable, roots=roots,
                              sync_later=sync_later)
    except BaseException:
        src.close()
        raise
    try:
        wanted = ck.parse(task.checksum)
        strict = _strict(task)
        mode = "n" if strict else task.verify_checksum
        need_source = mode in ("s", "b")
        need_dest = mode in ("t", "b")
        if task.reusable and not task.committing:
            reused = _reusable_copy(dst, task, wanted)
            if reused is not None:
                return reused
        resuming = task.committing or (dst.resumable and task.transferred > 0)
        size = src.size(full_read_next=not resuming)

        if task.committing and _already_committed(dst, size):
            dest_value = dst.adler32() if need_dest or need_source else None
            dst.committed_earlier()
            return CopyResult(size, f"{wanted.algorithm}:{dest_value}" if dest_value else None, size, dst.needs_sync)

        if not task.overwrite and dst.exists():
            raise CopyError("DESTINATION", errno.EEXIST, "Destination file exists and overwrite is not enabled", recoverable=False)

        offset = 0
        if dst.resumable:
            partial = dst.partial_size()
            # Resume from what is known to be on disk; a partial file longer than the source
            # is not a prefix of it.
            offset = min(partial, task.transferred) if partial <= size else 0
        # one pass over the bytes computes every checksum the mode asks for (a resumed copy
        # did not see its prefix go by: its checksums are computed by reading)
        digest = ck.Adler32() if (need_source or need_dest) and offset == 0 else None
        progress = lambda n: on_progress(n, dst)  # noqa: E731
        written = None
        local = src.local_path()
        if digest is None and local is not None:
            # local to local with nothing to hash on the way: let the kernel copy, as cp does
            written = dst.copy_from_path(local, offset, progress)
        if written is None:
            chunks = src.read_from(offset, buffer_size)
            if digest is not None:
                chunks = _hashing(chunks, digest)
            written = dst.write(chunks, offset, progress)
        if not strict and written != size:
            dst.discard()
            raise CopyError("TRANSFER", errno.EIO, f"Source and destination file size mismatch ({size} != {written})")

        source_value = None
        if need_source:
            if digest is not None:
                source_value = digest.hexdigest()
            else:  # resumed: the prefix was read by an earlier attempt, so read the source again
                whole = ck.Adler32()
                for chunk in src.read_from(0, buffer_size):
                    whole.update(chunk)
                source_value = whole.hexdigest()
        dest_value = None
        if need_dest or (need_source and mode == "b"):
            if digest is not None and dst.checksum_of_written and not reread_destination:
                dest_value = digest.hexdigest()
            else:
                dest_value = dst.adler32()
        problem = ck.verify(mode, wanted, source_value, dest_value)
        if problem:
            dst.discard()
            raise _verify_error(problem)

        on_commit(written)
        dst.commit(task.overwrite)
        computed = dest_value or source_value
        return CopyResult(written, f"{wanted.algorithm}:{computed}" if computed else None, offset, dst.needs_sync)
    finally:
        src.close()
        dst.close()


def _reusable_copy(dst: Destination, task: CopyTask, wanted: ck.Checksum) -> CopyResult | None:
    """A complete copy at an intermediate hop's destination, of the submitted size (when one
    was given) and checksum: the hop is done without copying. None: copy as usual."""
    try:
        if not wanted.value or dst.partial_size() or not dst.exists():
            return None
        size = dst.size()
        if task.user_filesize is not None and size != task.user_filesize:
            return None
        value = dst.adler32()
    except (CopyError, OSError):
        return None  # not a readable file: the copy says what is wrong
    if not ck.same(value, wanted.value):
        return None
    dst.committed_earlier()  # made durable with the others of its batch
    return CopyResult(size, f"{wanted.algorithm}:{value}", size, dst.needs_sync, reused=True)


def discard_partial(task: CopyTask, timeout: float = 30.0, roots: Sequence[str] = ()) -> None:
    """Remove what attempts at ``task`` left behind (a partial file), best effort."""
    try:
        dst = destination_for(task.destination, str(task.file_id), timeout, roots=roots)
    except CopyError:
        return
    try:
        if dst.resumable:
            dst.discard()
    finally:
        dst.close()
