"""What `aso init` writes: an embedded installation's configuration file and the folders it
names."""

from __future__ import annotations

from pathlib import Path

from aso.config import from_dict, render_toml
from aso.errors import ConfigError

EXAMPLE_SITES = ("T2_XX_Source", "T2_YY_Dest", "T2_ZZ_Dest")


def init_installation(
    directory: Path,
    *,
    force: bool = False,
    fts_endpoint: str = "http://127.0.0.1:8446",
    overrides: dict | None = None,
    sites: dict[str, dict[str, str]] | None = None,
) -> Path:
    """Write ``aso.toml`` in ``directory`` and create every folder it names.

    Sites default to local folders under ``directory/sites`` served by ``fts_endpoint``.
    Returns the path of the configuration file.
    """
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "aso.toml"
    if path.exists() and not force:
        raise ConfigError(f"{path}: already exists (use --force to overwrite)")
    if sites is None:
        sites = {
            name: {"prefix": (directory / "sites" / name).as_uri(), "fts": fts_endpoint}
            for name in EXAMPLE_SITES
        }
    settings = {
        "state": {"url": "sqlite:///state.db"},
        "sandbox": {"root": "sandboxes"},
        "credentials": {"source": "directory", "directory": "proxies", "cache_dir": "proxy-cache"},
        "aso": {"lock_dir": "locks"},
        "fts_server": {"db": "fts.db"},
        "publisher": {"catalog_url": "sqlite:///catalog.db"},
    }
    for section, values in (overrides or {}).items():
        settings.setdefault(section, {}).update(values)
    text = render_toml(settings, sites)
    config = from_dict(_parse(text), path=path)  # validate before writing anything
    path.write_text(text)
    for folder in (
        config.sandbox.root,
        config.credentials.directory,
        config.credentials.cache_dir,
        config.aso.lock_dir,
    ):
        Path(folder).mkdir(parents=True, exist_ok=True)
    for site in config.sites.values():
        if site.prefix.startswith("file:///"):
            Path(site.prefix[len("file://"):]).mkdir(parents=True, exist_ok=True)
    Path(config.credentials.cache_dir).chmod(0o700)
    return path


def _parse(text: str) -> dict:
    import tomllib

    return tomllib.loads(text)
