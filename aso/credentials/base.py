"""Where user proxies come from: one small interface, one module per source.

A source returns the path of a cached proxy file (mode 0600) with more than
``min_time_left`` seconds left, or raises :class:`NoProxy` saying why there is none. A cached
proxy with enough time left is reused without contacting anything.
"""

from __future__ import annotations

import datetime as dt
import os
from abc import ABC, abstractmethod
from pathlib import Path

from aso import validate
from aso.errors import AsoError
from aso.x509 import pki
from aso.x509.proxy import ProxyError, parse_proxy


class NoProxy(AsoError):
    """No usable proxy for a user; ``reason`` says why (missing, expired, too short, refused)."""

    def __init__(self, username: str, reason: str):
        self.username = username
        self.reason = reason
        super().__init__(f"no usable proxy for {username}: {reason}")


def check_proxy(data: bytes, username: str, min_time_left: int, what: str) -> dt.timedelta:
    """Parse a proxy and return its time left; NoProxy when unreadable or too short."""
    try:
        # the key is only matched to its certificate here, never used: skip OpenSSL's slow check
        proxy = parse_proxy(data, check_key=False)
    except ProxyError as exc:
        raise NoProxy(username, f"{what} is not a usable proxy ({exc})") from None
    left = proxy.time_left()
    if left.total_seconds() <= 0:
        raise NoProxy(username, f"{what} expired {int(-left.total_seconds())} s ago")
    if left.total_seconds() < min_time_left:
        raise NoProxy(username, f"{what} has {int(left.total_seconds())} s left, less than the {min_time_left} s required")
    return left


def write_private(path: Path, data: bytes) -> None:
    """Atomically write a credential readable by its owner only, in a folder only they enter."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    pki.write_private(path, data, 0o600)


class ProxySource(ABC):
    def __init__(self, cache_dir: str | os.PathLike, min_time_left: int = 3600):
        self.cache_dir = Path(cache_dir)
        self.min_time_left = min_time_left

    def cache_path(self, username: str) -> Path:
        return self.cache_dir / f"{validate.username(username)}.pem"

    def cached(self, username: str) -> Path | None:
        """The cached proxy when it still has enough time left."""
        path = self.cache_path(username)
        try:
            check_proxy(path.read_bytes(), username, self.min_time_left, "the cached proxy")
        except (OSError, NoProxy):
            return None
        return path

    def get_proxy(self, username: str) -> Path:
        """A proxy file for ``username`` (cached, 0600); NoProxy when there is none."""
        return self.cached(username) or self.fetch(username)

    @abstractmethod
    def fetch(self, username: str) -> Path:
        """Obtain a fresh proxy, cache it, return the cache path."""
