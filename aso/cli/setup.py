"""``aso init`` and ``aso config-reference``."""

from __future__ import annotations

from pathlib import Path

import click

from aso.cli.common import console
from aso.installation import init_installation


@click.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="Overwrite an existing aso.toml.")
@click.option("--fts", "fts_endpoint", default="http://127.0.0.1:8446", show_default=True, help="FTS endpoint for the example sites.")
@click.option("--set", "settings", multiple=True, metavar="SECTION.NAME=VALUE",
              help="Set an option (repeatable); VALUE is read as TOML (42, true, \"text\") or else as text.")
def init(directory: str, force: bool, fts_endpoint: str, settings: tuple[str, ...]) -> None:
    """Write a working embedded configuration into DIRECTORY and create its folders.

    The result uses a local SQLite state store, sandboxes and proxies under DIRECTORY and
    three example sites that are plain local folders; run components with
    ``aso --config DIRECTORY/aso.toml ...`` or from inside DIRECTORY. Every option can be
    given with --set (docs/configuration.md lists them); the whole file is validated before
    anything is written.
    """
    path = init_installation(Path(directory), force=force, fts_endpoint=fts_endpoint, overrides=_overrides(settings))
    console.print(f"wrote [bold]{path}[/]")


def _overrides(settings: tuple[str, ...]) -> dict:
    import tomllib

    from aso.config import OPTIONS
    from aso.errors import ValidationError

    known = {o.key for o in OPTIONS}
    out: dict[str, dict] = {}
    for item in settings:
        key, sep, text = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not section or not name:
            raise ValidationError("--set", f"{item!r} is not SECTION.NAME=VALUE")
        if f"{section}.{name}" not in known:
            raise ValidationError("--set", f"{section}.{name}: unknown option (docs/configuration.md lists them)")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        out.setdefault(section, {})[name] = value
    return out


@click.command("config-reference")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write to a file instead of stdout.")
def config_reference(output: str | None) -> None:
    """Print the configuration reference (docs/configuration.md) generated from the code."""
    from aso.config import render_reference_markdown

    text = render_reference_markdown()
    if output:
        Path(output).write_text(text)
    else:
        click.echo(text, nl=False)
