"""``aso publisher``: one publication pass (or a loop of them), a thin layer over
:mod:`aso.components.publisher`, run like the other components
(:func:`aso.cli.component_cmds.run_component`)."""

from __future__ import annotations

import logging

import click

from aso.cli.common import pass_app
from aso.cli.component_cmds import metrics_port_option, run_component

log = logging.getLogger("aso.publisher")


@click.command()
@click.option("--loop", is_flag=True, help="Run passes until interrupted instead of one.")
@click.option("--interval", type=float, default=600.0, show_default=True, help="Seconds between passes with --loop.")
@click.option("--json", "as_json", is_flag=True, help="Print the pass summary as JSON.")
@metrics_port_option
@pass_app
def publisher(app, loop: bool, interval: float, as_json: bool, metrics_port: int | None) -> None:
    """Publish transferred files into the catalog ([publisher] section), in blocks.

    Exit codes: 0 done (or another pass holds the lock), 1 some publication failed,
    2 bad configuration, 3 state backend or catalog unreachable.
    """

    def show(summary) -> None:
        click.echo(summary.line())  # one line, never wrapped (rich wraps at 80 columns off a terminal)
        for error in summary.errors:
            log.warning("%s", error)

    run_component(app, "publisher", "publishing users", loop, interval, as_json, show=show, what="the files",
                  metrics_port=metrics_port)
