"""The embedded default: one proxy file per user in a folder, ``<directory>/<user>.pem``."""

from __future__ import annotations

import os
from pathlib import Path

from aso.credentials.base import NoProxy, ProxySource, check_proxy, write_private


class DirectoryProxySource(ProxySource):
    def __init__(self, directory: str | os.PathLike, cache_dir: str | os.PathLike, min_time_left: int = 3600):
        super().__init__(cache_dir, min_time_left)
        self.directory = Path(directory)

    def fetch(self, username: str) -> Path:
        source = self.directory / f"{self.cache_path(username).name}"
        try:
            data = source.read_bytes()
        except FileNotFoundError:
            raise NoProxy(username, f"{source} does not exist") from None
        except OSError as exc:
            raise NoProxy(username, f"cannot read {source}: {exc.strerror or exc}") from None
        check_proxy(data, username, self.min_time_left, str(source))
        target = self.cache_path(username)
        write_private(target, data)
        return target
