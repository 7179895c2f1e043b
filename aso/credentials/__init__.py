"""Proxy sources (``[credentials] source``): ``directory`` (the embedded default) and ``myproxy``."""

from __future__ import annotations

from aso.credentials.base import NoProxy, ProxySource
from aso.credentials.directory import DirectoryProxySource


def proxy_source_from_config(config) -> ProxySource:
    c = config.credentials
    if c.source == "directory":
        return DirectoryProxySource(c.directory, c.cache_dir, c.min_time_left)
    if c.source == "myproxy":
        from aso.credentials.myproxy import MyProxySource

        return MyProxySource.from_config(config)
    from aso.errors import ConfigError

    raise ConfigError(f"credentials.source: unknown proxy source {c.source!r} (directory or myproxy)")


__all__ = ["DirectoryProxySource", "NoProxy", "ProxySource", "proxy_source_from_config"]
