"""``aso init`` and ``aso config-reference``."""

from __future__ import annotations

from pathlib import Path

import click

from aso.cli.common import console, handle_errors
from aso.setup import init_installation


@click.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="Overwrite an existing aso.toml.")
@click.option("--fts", "fts_endpoint", default="http://127.0.0.1:8446", show_default=True, help="FTS endpoint for the example sites.")
@handle_errors
def init(directory: str, force: bool, fts_endpoint: str) -> None:
    """Write a working embedded configuration into DIRECTORY and create its folders.

    The result uses a local SQLite state store, sandboxes and proxies under DIRECTORY and
    two example sites that are plain local folders; run components with
    ``aso --config DIRECTORY/aso.toml ...`` or from inside DIRECTORY.
    """
    path = init_installation(Path(directory), force=force, fts_endpoint=fts_endpoint)
    console.print(f"wrote [bold]{path}[/]")


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
