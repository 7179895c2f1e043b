"""Protocol plug-ins: one module per URL scheme behind the interface in ``base``."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from aso.ftsd.protocols.base import CopyError, Destination, Source


def source_for(url: str, timeout: float = 60.0, roots: Sequence[str] = (), nearline: bool = False) -> Source:
    """``roots``: the folders a file:// URL must lie under (none: file:// is refused);
    ``nearline``: the file is on tape and not online (reading it fails)."""
    scheme = urlsplit(url).scheme
    if scheme == "file":
        from aso.ftsd.protocols.file import FileSource

        return FileSource(url, roots, nearline=nearline)
    if scheme in ("http", "https"):
        from aso.ftsd.protocols.http import HttpSource

        return HttpSource(url, timeout=timeout)
    raise CopyError("SOURCE", 93, f"protocol {scheme!r} is not supported by this service")


def destination_for(url: str, part_name: str, timeout: float = 60.0, durable: bool = True,
                    roots: Sequence[str] = (), sync_later: bool = False) -> Destination:
    """``durable``: fsync what is written before a checkpoint and before the rename (local files);
    with ``sync_later`` the final sync is left to the caller (``Destination.needs_sync``), which
    syncs the file system once for many files. ``roots``: the folders a file:// URL must lie
    under (none: file:// is refused)."""
    scheme = urlsplit(url).scheme
    if scheme == "file":
        from aso.ftsd.protocols.file import FileDestination

        return FileDestination(url, part_name, durable=durable, roots=roots, sync_later=sync_later)
    if scheme in ("http", "https"):
        from aso.ftsd.protocols.http import HttpDestination

        return HttpDestination(url, timeout=timeout)
    raise CopyError("DESTINATION", 93, f"protocol {scheme!r} is not supported by this service")


def delete(url: str, timeout: float = 60.0, roots: Sequence[str] = ()) -> bool:
    """Remove the file at ``url`` (a multihop job's scratch copy). True when it was removed,
    False when there was nothing to remove; CopyError when it could not be."""
    scheme = urlsplit(url).scheme
    if scheme == "file":
        from aso.ftsd.protocols.file import delete_file

        return delete_file(url, roots)
    if scheme in ("http", "https"):
        from aso.ftsd.protocols.http import delete_http

        return delete_http(url, timeout)
    raise CopyError("DESTINATION", 93, f"protocol {scheme!r} is not supported by this service")


__all__ = ["CopyError", "Destination", "Source", "delete", "destination_for", "source_for"]
