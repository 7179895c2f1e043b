"""``aso catalog``: look inside the embedded catalog."""

from __future__ import annotations

import click
from rich.table import Table

from aso.cli.common import EXIT_BAD_INPUT, console, echo_json, fail, pass_app


@click.group()
def catalog() -> None:
    """The catalog publications go to ([publisher].catalog, catalog_url)."""


@catalog.command("list")
@click.option("--dataset", default=None, help="Only this dataset.")
@click.option("--json", "as_json", is_flag=True, help="Datasets, blocks and files as JSON.")
@pass_app
def list_(app, dataset: str | None, as_json: bool) -> None:
    """Datasets with their blocks and files (local catalog only)."""
    from aso.catalogs import catalog_from_config
    from aso.catalogs.local import LocalCatalog

    cat = catalog_from_config(app.config)
    try:
        if not isinstance(cat, LocalCatalog):
            fail("catalog list reads the local catalog; use DBS's own tools for dbs", EXIT_BAD_INPUT)
        listing = cat.listing(dataset)
    finally:
        cat.close()
    if as_json:
        echo_json(listing)
        return
    table = Table(title="catalog")
    for col in ("dataset", "block", "files", "bytes"):
        table.add_column(col, justify="right" if col in ("files", "bytes") else "left")
    for ds in listing:
        for blk in ds["blocks"]:
            table.add_row(ds["dataset"], blk["block"].split("#", 1)[1], str(len(blk["files"])), str(sum(f["size"] for f in blk["files"])))
    console.print(table)
    console.print(f"{len(listing)} datasets, {sum(len(d['blocks']) for d in listing)} blocks, "
                  f"{sum(len(b['files']) for d in listing for b in d['blocks'])} files", highlight=False)
