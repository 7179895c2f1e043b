"""``aso archive``: finished rows out of the live table, on the state database itself."""

from __future__ import annotations

import time

import click

from aso.cli.common import EXIT_BAD_INPUT, echo_json, fail, pass_app, progress_bar

DAY = 86400


@click.command()
@click.option("--older-than", "older_than", type=int, default=None, metavar="DAYS",
              help="Take rows that ended and last changed more than DAYS days ago (default: archive.older_than_days).")
@click.option("--purge", is_flag=True, help="Delete the rows instead of moving them to filetransfersdb_history.")
@click.option("--batch-size", type=int, default=None, help="Rows per transaction (default: archive.batch_size).")
@click.option("--dry-run", is_flag=True, help="Only count the rows that would go.")
@click.option("--db-url", default=None,
              help="State database (default: server.db_url, else state.url; must be a database URL, not a REST server).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def archive(app, older_than: int | None, purge: bool, batch_size: int | None, dry_run: bool, db_url: str | None,
            as_json: bool) -> None:
    """Move finished rows older than --older-than days to filetransfersdb_history (or delete them).

    Finished: transfer FAILED or KILLED, or DONE with publication DONE, FAILED or
    NOT_REQUIRED; every other row (waiting, in flight, to publish) stays. One transaction per
    batch copies and deletes the same rows, so a killed run loses nothing and the next run
    carries on. It works on the database directly (run it where aso server runs, e.g. from
    cron), never through the REST API. Exit codes: 0 done (also: nothing to do), 2 bad
    input or a REST URL instead of a database, 3 the database unreachable.
    """
    from aso.config import check_option
    from aso.errors import ConfigError
    from aso.state.store import Store

    config = app.config
    days = config.archive.older_than_days if older_than is None else older_than
    if days < 0:
        fail(f"--older-than: expected a number of days >= 0, got {days}", EXIT_BAD_INPUT)
    batch = config.archive.batch_size if batch_size is None else batch_size
    if not 1 <= batch <= 1_000_000:
        fail(f"--batch-size: expected 1 to 1000000 rows, got {batch}", EXIT_BAD_INPUT)
    url = db_url or config.server.db_url or config.state.url
    if url.startswith(("http://", "https://")):
        fail(f"aso archive works on the state database itself, not through a REST server ({url}): "
             "give --db-url or set server.db_url", EXIT_BAD_INPUT)
    if db_url:
        try:
            url = check_option("server.db_url", db_url)
        except ConfigError as exc:
            fail(f"--db-url: {str(exc).removeprefix('server.db_url: ')}", EXIT_BAD_INPUT)
    # more days than the epoch holds: nothing is that old (not a negative cut-off)
    cutoff = max(0, int(time.time()) - days * DAY)
    store = Store(url)
    try:
        total = store.archivable(cutoff) if not dry_run else 0
        verb = "deleting" if purge else "archiving"
        with progress_bar(f"{verb} finished rows", total, show=not as_json and not dry_run) as advance:
            result = store.archive(cutoff, purge=purge, batch=batch, dry_run=dry_run, progress=advance)
    finally:
        store.close()
    out = {**result.as_dict(), "older_than_days": days}
    if as_json:
        echo_json(out)
        return
    done = "would be deleted" if purge and dry_run else "would be archived" if dry_run else \
        "deleted" if purge else "moved to filetransfersdb_history"
    click.echo(f"{result.rows} finished row(s) older than {days} day(s) {done}"
               + ("" if dry_run else f" in {result.batches} batch(es)"))
