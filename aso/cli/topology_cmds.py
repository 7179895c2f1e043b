"""``aso topology``: the sites and links of the configuration, and the path between two sites."""

from __future__ import annotations

import click
from rich.table import Table

from aso.cli.common import EXIT_FAILED, AppContext, console, echo_json, pass_app


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@pass_app
@click.pass_context
def topology(ctx: click.Context, app: AppContext, as_json: bool) -> None:
    """Sites and links of the configuration ([sites.NAME], [[links]], [topology]).

    Without a subcommand: every site (may it be an intermediate site of a multi-hop path,
    its hop penalty, its limits) and every link (distance, endpoint, transfer tool, limit,
    configured or implied by [topology] default_distance). ``aso topology path SRC DST``
    shows the path a file from SRC to DST takes. Exit codes: 0 done, 1 no path between the
    sites (one line on stderr starting NO_PATH:), 2 bad configuration or an unknown site.
    """
    if ctx.invoked_subcommand is not None:
        return
    data = app.config.topology().as_dict()
    if as_json:
        echo_json(data)
        return
    sites = Table(title=f"sites (hop penalty {data['hop_penalty']}, at most {data['max_hops']} hop(s) per path)")
    for column in ("site", "tape", "multihop", "penalty", "max in", "max out", "fts"):
        sites.add_column(column, overflow="fold")
    for s in data["sites"]:
        sites.add_row(s["name"], "yes" if s["tape"] else "no", "yes" if s["available_for_multihop"] else "no", str(s["hop_penalty"]),
                      _limit(s["max_incoming"]), _limit(s["max_outgoing"]), s["fts"])
    links = Table(title="links")
    for column in ("source", "destination", "distance", "endpoint", "tool", "max files", "origin"):
        links.add_column(column, overflow="fold")
    for link in data["links"]:
        links.add_row(link["source"], link["destination"], str(link["distance"]), link["endpoint"],
                      link["transfertool"], _limit(link["max_files"]), "configured" if link["configured"] else "implied")
    console.print(sites)
    if data["links"]:
        console.print(links)
    else:
        console.print("no links: [topology] default_distance is 0 and no [[links]] are configured")


@topology.command("path")
@click.argument("source")
@click.argument("destination")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@pass_app
@click.pass_context
def path(ctx: click.Context, app: AppContext, source: str, destination: str, as_json: bool) -> None:
    """The path a file from SOURCE to DESTINATION takes: its sites, cost, hops and the FTS
    endpoint its job goes to. No path: one line on stderr starting NO_PATH:, exit 1."""
    from aso.topology import NoPathError

    try:
        route = app.config.topology().route(source, destination)
    except NoPathError as exc:
        click.echo(str(exc), err=True)
        ctx.exit(EXIT_FAILED)
    if as_json:
        echo_json(route.as_dict())
        return
    kind = "multi-hop" if route.is_multihop else "direct"
    click.echo(f"{route.path.text()}  ({kind}: cost {route.path.cost}, {route.path.hops} hop(s), "
               f"submitted to {route.endpoint} with {route.transfertool})")
    if route.is_multihop:
        for link in route.links:
            click.echo(f"  {link.source} -> {link.destination}  distance {link.distance}")


def _limit(value: int) -> str:
    return str(value) if value else "-"
