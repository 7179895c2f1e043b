"""Catalog plug-ins: where published files are recorded (one module per catalog)."""

from __future__ import annotations

from aso.catalogs.base import Block, Catalog, CatalogFile
from aso.errors import ConfigError

__all__ = ["Block", "Catalog", "CatalogFile", "open_catalog", "catalog_from_config"]


def open_catalog(kind: str, url: str, **options) -> Catalog:
    """The catalog ``kind`` (local or dbs) at ``url``."""
    if kind == "local":
        from aso.catalogs.local import LocalCatalog

        return LocalCatalog(url)
    if kind == "dbs":
        from aso.catalogs.dbs import DbsCatalog

        return DbsCatalog(url, **options)
    raise ConfigError(f"publisher.catalog: unknown catalog {kind!r} (expected local or dbs)")


def catalog_from_config(config) -> Catalog:
    return open_catalog(config.publisher.catalog, config.publisher.catalog_url)
