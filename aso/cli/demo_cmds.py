"""``aso demo``: a thin layer over :mod:`aso.demo` with a live rich view and a summary table."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from aso.cli.common import EXIT_FAILED, console, echo_json, fail

_TRANSFER_ORDER = ("NEW", "ACQUIRED", "SUBMITTED", "RETRY", "DONE", "FAILED", "KILL", "KILLED")
_PUBLICATION_ORDER = ("NEW", "ACQUIRED", "RETRY", "DONE", "FAILED", "NOT_REQUIRED")


def _counts_table(title: str, counts: dict[str, int], order: tuple[str, ...]):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    names = [n for n in order if n in counts] + sorted(set(counts) - set(order))
    for name in names:
        table.add_column(name, justify="right", style="green" if name in ("DONE", "NOT_REQUIRED") else None)
    table.add_row(*(str(counts[n]) for n in names))
    return table


def _live_view(snapshot):
    from rich.console import Group
    from rich.text import Text

    return Group(
        _counts_table("transfers", snapshot.transfer_states, _TRANSFER_ORDER),
        _counts_table("publication", snapshot.publication_states, _PUBLICATION_ORDER),
        Text(f"{snapshot.elapsed:6.1f} s  {snapshot.done}/{snapshot.files} done  {snapshot.rate:6.1f} files/s   "
             f"last: {snapshot.line or snapshot.component}", overflow="ellipsis", no_wrap=True),
    )


def _summary(result) -> None:
    from rich.table import Table

    table = Table(title="aso demo", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("files", f"{result.files} ({result.publish_flagged} flagged for publication)")
    table.add_row("bytes", f"{result.bytes:,} ({result.bytes / 2**20:.1f} MiB)")
    table.add_row("time", f"{result.seconds:.1f} s ({result.files / result.seconds:.1f} files/s)")
    table.add_row("transfer states", ", ".join(f"{k} {v}" for k, v in sorted(result.transfer_states.items())))
    table.add_row("publication states", ", ".join(f"{k} {v}" for k, v in sorted(result.publication_states.items())))
    table.add_row("component passes", ", ".join(f"{k} {v}" for k, v in result.passes.items()))
    table.add_row("finished files learnt by", result.completion_path
                  + (f": {result.received} from messages, {result.files - result.received} from polls" if result.received else ""))
    for entry in result.catalog:
        files = sum(len(b["files"]) for b in entry["blocks"])
        table.add_row("catalog", f"{entry['dataset']}: {len(entry['blocks'])} block(s), {files} files")
    if not result.catalog:
        table.add_row("catalog", "empty")
    table.add_row("installation", f"{result.directory} (log: demo.log)" if result.kept else "temporary, removed")
    table.add_row("result", "[green]every file DONE, byte-identical, publishable ones in the catalog[/]" if result.ok
                  else f"[red]{len(result.problems)} problem(s)[/]")
    console.print(table)
    for problem in result.problems[:20]:
        console.print(f"[red]problem:[/] {problem}", highlight=False)


@click.command()
@click.option("--files", type=int, default=200, show_default=True, help="Files to create and move.")
@click.option("--users", type=int, default=3, show_default=True, help="Users they belong to (one proxy each).")
@click.option("--keep", type=click.Path(file_okay=False), default=None,
              help="Build the installation in this new or empty folder and keep it (default: a temporary folder, removed).")
@click.option("--timeout", type=float, default=600.0, show_default=True, help="Give up after this many seconds.")
@click.option("--broker", default="auto", show_default=True,
              help="STOMP broker (host:port, guest/guest) for push monitoring with aso receiver; 'auto' uses "
                   "127.0.0.1:61613 when it answers, 'none' polls only.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON instead of tables.")
def demo(files: int, users: int, keep: str | None, timeout: float, broker: str, as_json: bool) -> None:
    """Run the whole product on this machine with nothing configured: a throwaway CA and user
    proxies, an embedded installation (local state store, three sites as local folders), the
    embedded FTS service over HTTPS, FILES real files injected as a job would, then transfer,
    monitor, reporter, publisher and retry-manager in cron order until every file is terminal.

    With a STOMP broker (--broker) the FTS service publishes completion messages and aso
    receiver turns them into results; the summary says which path was used.

    Ends with a summary table. Exit codes: 0 every file DONE, byte-identical at its destination
    and, when flagged, in the catalog once; 1 anything else (the problems are listed);
    2 bad options.
    """
    from aso.demo import DemoSettings, run_demo

    settings = DemoSettings(files=files, users=users, keep=Path(keep) if keep else None, timeout=timeout,
                            broker=None if broker == "none" else broker)
    if as_json or not sys.stdout.isatty():
        result = run_demo(settings)
    else:
        from rich.live import Live
        from rich.text import Text

        with Live(Text("setting up: CA, proxies, installation, FTS service, files…"), console=console,
                  refresh_per_second=8) as live:
            result = run_demo(settings, on_update=lambda snap: live.update(_live_view(snap)))
    if as_json:
        echo_json(result.as_dict())
    else:
        _summary(result)
    if not result.ok:
        fail(f"demo: {len(result.problems)} problem(s); first: "
             f"{result.problems[0] if result.problems else 'see the summary'}", EXIT_FAILED)
