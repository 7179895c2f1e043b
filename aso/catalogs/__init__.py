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
    """The configured catalog. DBS authenticates with the installation's service
    certificate ([credentials] service_cert/service_key) and verifies with its CA folder."""
    kind = config.publisher.catalog
    if kind != "dbs":
        return open_catalog(kind, config.publisher.catalog_url)
    creds = config.credentials
    cert = (str(creds.service_cert), str(creds.service_key)) if creds.service_cert and creds.service_key else None
    verify: bool | str = str(creds.ca_dir) if creds.ca_dir else True
    return open_catalog("dbs", config.publisher.catalog_url, cert=cert, verify=verify)
