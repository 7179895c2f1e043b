"""``aso publisher``: one publication pass (or a loop of them), a thin layer over
:mod:`aso.components.publisher`."""

from __future__ import annotations

import logging
import sys
import time

import click

from aso.cli.common import EXIT_FAILED, console, echo_json, err_console, fail, pass_app

log = logging.getLogger("aso.publisher")


@click.command()
@click.option("--loop", is_flag=True, help="Run passes until interrupted instead of one.")
@click.option("--interval", type=float, default=600.0, show_default=True, help="Seconds between passes with --loop.")
@click.option("--json", "as_json", is_flag=True, help="Print the pass summary as JSON.")
@pass_app
def publisher(app, loop: bool, interval: float, as_json: bool) -> None:
    """Publish transferred files into the catalog ([publisher] section), in blocks.

    Exit codes: 0 done (or another pass holds the lock), 1 some publication failed,
    2 bad configuration, 3 state backend or catalog unreachable.
    """
    from aso.catalogs import catalog_from_config
    from aso.components.publisher import PublisherSettings, run_publisher
    from aso.locking import LockHeld, component_lock

    config = app.config
    settings = PublisherSettings.from_config(config)
    try:
        with component_lock(config.aso.lock_dir, "publisher"):
            backend = app.backend()
            catalog = catalog_from_config(config)
            try:
                while True:
                    if as_json or not sys.stderr.isatty():
                        summary = run_publisher(backend, catalog, settings)
                    else:
                        from rich.progress import Progress

                        with Progress(console=err_console, transient=True) as bar:
                            job = bar.add_task("publishing users", total=None)
                            summary = run_publisher(
                                backend, catalog, settings,
                                progress=lambda done, total, job=job: bar.update(job, completed=done, total=total),
                            )
                    if as_json:
                        echo_json(summary.as_dict())
                    else:
                        console.print(summary.line(), highlight=False)
                        for error in summary.errors:
                            log.warning("%s", error)
                    if not loop:
                        break
                    time.sleep(interval)
            finally:
                catalog.close()
                backend.close()
    except LockHeld as exc:
        click.echo(str(exc), err=True)
        return
    except KeyboardInterrupt:
        return
    if summary.errors:
        fail(f"publisher: {len(summary.errors)} error(s) in this pass, the files wait for the next pass "
             f"(see the log); first: {summary.errors[0]}", EXIT_FAILED)
