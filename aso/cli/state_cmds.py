"""Commands around the state backend: ``server``, ``inject``, ``status``, ``kill``, ``retry``."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Any

import click
from rich.table import Table

from aso.cli.common import (
    EXIT_FAILED,
    console,
    echo_json,
    fail,
    pass_app,
    progress_bar,
)
from aso.errors import BackendUnavailable, ValidationError
from aso.state.states import PublicationState, TransferState


@click.command()
@click.option("--host", default=None, help="Address to listen on (default: server.host).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Port to listen on (default: server.port).")
@click.option("--db-url", default=None, help="Database to serve (default: server.db_url, else state.url).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Worker threads (default: server.threads).")
@pass_app
def server(app, host, port, db_url, threads) -> None:
    """Serve the state backend over CRAB's REST API (filetransfers, fileusertransfers, ...).

    Tokens, roles and limits come from the [server] section. For several processes use
    gunicorn: ASO_CONFIG=aso.toml gunicorn -w 4 -b 127.0.0.1:8080 'aso.state.server:app_from_env()'
    """
    from aso.cli.serving import serve_wsgi
    from aso.config import check_option
    from aso.logs import set_component
    from aso.state.server import app_from_config

    set_component("server")
    config = app.config
    if db_url:
        config.values["server"]["db_url"] = check_option("server.db_url", db_url)
    host = host or config.server.host
    serve_wsgi(app_from_config(config), host, port if port is not None else config.server.port,
               threads=threads or config.server.threads, what="aso server",
               started=lambda bound: f"aso server on http://{host}:{bound} (instance {config.aso.instance})")


def _no_lone_surrogates(requests: Any) -> None:
    """JSON may spell a lone surrogate (\\ud800), which no database or UTF-8 text can hold:
    refuse it as bad input, naming where it is."""

    def bad(text: str) -> int | None:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            return exc.start
        return None

    stack: list[tuple[str, Any]] = [("", requests)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str) and (at := bad(value)) is not None:
            raise ValidationError(where or "file", f"character {at} is a lone surrogate "
                                  f"({value[at]!r}), not valid Unicode")
        if isinstance(value, list):
            stack += [(f"{where}[{i}]", v) for i, v in enumerate(value)]
        elif isinstance(value, dict):
            for key, v in value.items():
                path = f"{where}.{ascii(key)}" if where else ascii(key)
                if bad(key) is not None:
                    raise ValidationError(path, "this key holds a lone surrogate, not valid Unicode")
                stack.append((f"{where}.{key}" if where else key, v))


def read_requests(source) -> Any:
    """The JSON document in ``source`` (a binary file): UTF-8, not nested absurdly deep,
    every string valid Unicode; else ValidationError (exit 2)."""
    raw = source.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError("file", f"not UTF-8 text: byte {exc.start} is {raw[exc.start:exc.start + 1]!r}") from None
    try:
        requests = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError("file", f"not valid JSON: {exc}") from None
    except RecursionError:
        raise ValidationError("file", "JSON nested too deeply (a list of flat objects is expected)") from None
    _no_lone_surrogates(requests)
    return requests


@click.command()
@click.argument("source", type=click.File("rb"))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def inject(app, source, as_json: bool) -> None:
    """Inject transfer requests from FILE (or - for stdin): a JSON list of objects.

    Each object has username, taskname, source, destination, source_lfn, destination_lfn,
    filesize, and optionally checksum (adler32), publish, job_id, job_retry_count, type,
    start_time. The whole list is validated first; one bad request writes nothing.
    """
    requests = read_requests(source)
    result = _inject_in_batches(app.backend(), requests, show_progress=not as_json)
    if as_json:
        echo_json({"inserted": result.inserted, "reinitialised": result.reinitialised, "skipped": result.skipped})
        return
    console.print(
        f"inserted {len(result.inserted)}, re-initialised {len(result.reinitialised)}, skipped {len(result.skipped)}"
    )
    for skip in result.skipped[:20]:
        console.print(f"  skipped {skip['id'][:12]}… ({skip['state']}): {skip['reason']}")


#: requests per inject call when a list is too big for one: a batch is one transaction (or
#: one request to the server), and the progress bar moves once per batch
INJECT_BATCH = 5000


def _inject_in_batches(backend, requests: Any, *, show_progress: bool):
    """Inject ``requests``: a list that fits one batch in one call (all or nothing, as
    before), a bigger one in batches of :data:`INJECT_BATCH` with a progress bar on a
    terminal. Every request is checked before the first batch goes, so bad input still
    writes nothing; a backend failure part-way leaves the earlier batches written, and
    injecting the same list again is safe (rows already recorded are skipped)."""
    from aso.state.records import InjectResult
    from aso.state.requests import transfer_row

    if not isinstance(requests, list) or len(requests) <= INJECT_BATCH:
        return backend.inject(requests)
    seen: dict[str, int] = {}
    for i, req in enumerate(requests):  # the checks the store makes, over the whole list
        row_id = transfer_row(i, req, 0)["tm_id"]
        if row_id in seen:
            raise ValidationError(f"[{i}].source_lfn", f"same file as request [{seen[row_id]}]")
        seen[row_id] = i
    result = InjectResult()
    with progress_bar("injecting", len(requests), show=show_progress) as advance:
        for start in range(0, len(requests), INJECT_BATCH):
            batch = requests[start:start + INJECT_BATCH]
            try:
                part = backend.inject(batch)
            except (ValidationError, BackendUnavailable) as exc:
                if not start:
                    raise
                # name the request as the whole list numbers it, and say what is written
                written = (f" (this batch's numbering; requests [0] to [{start - 1}] of the list were "
                           "written by earlier batches: injecting the same list again is safe)")
                if isinstance(exc, ValidationError):
                    raise ValidationError(_shift(exc.field, start), exc.problem + written) from None
                raise BackendUnavailable(str(exc) + written) from None
            result.inserted += part.inserted
            result.reinitialised += part.reinitialised
            result.skipped += part.skipped
            advance(len(batch))
    return result


def _shift(field: str, offset: int) -> str:
    """``[3].source_lfn`` of a batch starting at ``offset`` as the whole list numbers it."""
    import re

    return re.sub(r"^\[(\d+)\]", lambda m: f"[{int(m.group(1)) + offset}]", field or "")


@click.command()
@click.option("--user", default=None, help="Only this user.")
@click.option("--task", default=None, help="Only this task.")
@click.option("--hosts", is_flag=True,
              help="Instead: every component instance (worker, host, pid), its last heartbeat, whether it is live "
                   "([aso] heartbeat_timeout), its worker's generation and how many active users each live one owns.")
@click.option("--json", "as_json", is_flag=True, help="Print counts as JSON.")
@pass_app
def status(app, user, task, hosts: bool, as_json: bool) -> None:
    """Counts of transfers per state, per user and task (and publication states); with
    limits in the configuration, also which limits rows wait on (all users); with tape
    sites, stage-in requests per state and transfers from tape in flight. With --hosts,
    the component instances of every host sharing the state backend instead (service or
    operator token)."""
    backend = app.backend()
    if hosts:
        entries = host_entries(backend.instances(app.config.aso.heartbeat_timeout),
                               _active_users(backend.statistics()), time.time())
        if as_json:
            echo_json({"heartbeat_timeout": app.config.aso.heartbeat_timeout, "instances": entries})
        else:
            _print_hosts(entries, app.config.aso.heartbeat_timeout)
        return
    rows = backend.statistics(user=user, task=task)
    waiting = _waiting_on_limits(app, backend)
    staging = _staging(app, backend, user, task)
    if as_json:
        extra = {k: v for k, v in (("waiting_on_limits", waiting), ("staging", staging)) if v is not None}
        echo_json({"transfers": rows, **extra} if extra else rows)
        return
    _print_counts(rows)
    if waiting is not None:
        _print_waiting(waiting)
    if staging is not None:
        _print_staging(staging)


#: the transfer states of a user with work in hand (what a share divides)
_ACTIVE = {"NEW", "ACQUIRED", "SUBMITTED", "RETRY", "KILL"}


def _active_users(statistics: list[dict[str, Any]]) -> list[str]:
    return sorted({r["username"] for r in statistics if r["transfer_state"] in _ACTIVE})


def host_entries(instances: list, users: list[str], now: float) -> list[dict[str, Any]]:
    """One entry per instance: its record, the age of its heartbeat, and (live ones) how
    many of ``users`` its worker owns among the live workers of its component."""
    from aso.state.shares import shares

    live: dict[str, set[str]] = defaultdict(set)
    for i in instances:
        if i.live:
            live[i.component].add(i.worker)
    owned = {component: {w: len(us) for w, us in shares(users, workers).items()} for component, workers in live.items()}
    return [{**i.as_dict(), "age": max(0.0, now - i.heartbeat),
             "users": owned[i.component].get(i.worker, 0) if i.live else None, "active_users": len(users)}
            for i in instances]


def _print_hosts(entries: list[dict[str, Any]], timeout: int) -> None:
    if not entries:
        console.print("no heartbeats: no component has run against this state backend since it learnt them")
        return
    table = Table(title=f"component instances (live: heard from within {timeout} s)")
    for name in ("worker", "host", "component", "pid", "last heartbeat", "live", "generation", "state", "share"):
        table.add_column(name, justify="right" if name in ("pid", "generation") else "left", no_wrap=True)
    for e in entries:
        share = f"{e['users']}/{e['active_users']} users" if e["users"] is not None else "-"
        state = e["state"] + (f" by {e['taken_over_by']}" if e["state"] != "live" and e["taken_over_by"] else "")
        table.add_row(e["worker"], e["host"], e["component"], str(e["pid"]), f"{e['age']:.0f} s ago",
                      "[green]yes" if e["live"] else "[red]no", str(e["generation"]), state, share)
    console.print(table)


def _staging(app, backend, user: str | None, task: str | None) -> dict[str, Any] | None:
    """With tape sites configured: stage-in requests per state, and the transfers from tape
    sites in flight and waiting per link (every worker's; left out for a user's token, which
    may not read those counts). None without tape sites."""
    from aso.errors import ForbiddenError

    tape = sorted(name for name, site in app.config.sites.items() if site.tape)
    if not tape:
        return None
    per_state: dict[str, int] = defaultdict(int)
    for r in backend.statistics(user=user, task=task, request_type="stagein"):
        per_state[r["transfer_state"]] += r["count"]
    stagein = {s.name: per_state[s.name] for s in TransferState if per_state.get(s.name)}
    from_tape: list[dict[str, Any]] | None = None
    if task is None:  # the throttling counts are per user and link, not per task
        try:
            counts = backend.throttle_counts()
        except ForbiddenError:
            counts = None
        if counts is not None:
            links: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
            for i, table in enumerate((counts.inflight, counts.waiting)):
                for (u, src, dst), n in table.items():
                    # source == destination at a tape site is a stage-in, counted above
                    if src in tape and dst != src and user in (None, u):
                        links[(src, dst)][i] += n
            from_tape = [{"source": s, "destination": d, "in_flight": f, "waiting": w}
                         for (s, d), (f, w) in sorted(links.items())]
    return {"tape_sites": tape, "stagein": stagein, "from_tape": from_tape}


def _print_staging(staging: dict[str, Any]) -> None:
    stagein = staging["stagein"]
    console.print(f"tape sites: {', '.join(staging['tape_sites'])}; stage-in requests: "
                  + (", ".join(f"{n} {state}" for state, n in stagein.items()) if stagein else "none"))
    if staging["from_tape"] is None:
        return
    if not staging["from_tape"]:
        console.print("no transfers from tape sites in flight")
        return
    table = Table(title="transfers from tape sites")
    for name in ("source", "destination", "in flight", "waiting"):
        table.add_column(name, justify="right" if name in ("in flight", "waiting") else "left", no_wrap=True)
    for e in staging["from_tape"]:
        table.add_row(e["source"], e["destination"], str(e["in_flight"]), str(e["waiting"]))
    console.print(table)


def _print_counts(rows: list[dict[str, Any]]) -> None:
    per_task: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    pub: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in rows:
        key = (r["username"], r["taskname"])
        per_task[key][r["transfer_state"]] += r["count"]
        pub[key][r["publication_state"]] += r["count"]
    if not per_task:
        console.print("no transfers")
        return
    # Only the states that occur get a column, so the table fits a terminal.
    present = [s for s in TransferState if any(s.name in c for c in per_task.values())]
    table = Table(title="transfers per state")
    table.add_column("user", no_wrap=True)
    table.add_column("task", no_wrap=True)
    for state in present:
        table.add_column(state.name, justify="right")
    table.add_column("published", justify="right")
    totals: dict[str, int] = defaultdict(int)
    for (u, t), counts in sorted(per_task.items()):
        for k, v in counts.items():
            totals[k] += v
        done = pub[(u, t)].get(PublicationState.DONE.name, 0)
        wanted = sum(v for k, v in pub[(u, t)].items() if k != PublicationState.NOT_REQUIRED.name)
        table.add_row(u, t, *[str(counts.get(s.name, 0)) for s in present], f"{done}/{wanted}" if wanted else "-")
    if len(per_task) > 1:
        table.add_row("[bold]total", "", *[f"[bold]{totals.get(s.name, 0)}" for s in present], "")
    console.print(table)


def _waiting_on_limits(app, backend) -> list[dict[str, Any]] | None:
    """Which limits rows wait on (:func:`aso.topology.throttle.explain`), or None when the
    configuration sets no limits or the caller may not read the counts (a user's token)."""
    from aso.errors import ForbiddenError
    from aso.topology.throttle import ThrottleLimits, explain

    limits = ThrottleLimits.from_topology(app.config.topology())
    if limits.is_empty():
        return None
    try:
        counts = backend.throttle_counts()
    except ForbiddenError:
        return None
    return explain(counts.inflight, counts.waiting, limits)


def _print_waiting(entries: list[dict[str, Any]]) -> None:
    if not entries:
        console.print("no rows wait on limits")
        return
    table = Table(title="waiting on limits")
    for name in ("limit", "site or link", "max", "in flight", "waiting"):
        table.add_column(name, justify="right" if name in ("max", "in flight", "waiting") else "left", no_wrap=True)
    for e in entries:
        where = e["site"] if "site" in e else f"{e['source']} -> {e['destination']}"
        table.add_row(e["limit"], where, str(e["max"]), str(e["in_flight"]), str(e["waiting"]))
    console.print(table)


@click.command()
@click.option("--task", default=None, help="Kill every transfer of this task still in flight.")
@click.option("--ids", default=None, help="Comma-separated transfer ids to kill.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def kill(app, task, ids, as_json: bool) -> None:
    """Request a kill: rows in flight go to KILL; the retry manager cancels them in FTS."""
    id_list = [i.strip() for i in ids.split(",") if i.strip()] if ids else None
    if (task is None) == (id_list is None):
        raise ValidationError("--task/--ids", "give exactly one of --task or --ids")
    result = app.backend().request_kill(task=task, ids=id_list)
    if as_json:
        echo_json({"killed": result.killed, "failed_kill": result.failed_kill})
    else:
        console.print(f"kill requested for {len(result.killed)} transfers; {len(result.failed_kill)} could not be killed")
        for f in result.failed_kill[:20]:
            console.print(f"  not killed {f['id'][:12]}…: {f['reason']}", highlight=False)
    if result.failed_kill and not result.killed:
        fail(f"none of the {len(result.failed_kill)} transfer(s) could be killed", EXIT_FAILED)


@click.command()
@click.option("--task", default=None, help="The task whose failed transfers go back to NEW.")
@click.option("--ids", default=None, help="Comma-separated transfer ids instead of a task.")
@click.option("--publication", is_flag=True, help="Retry failed publication instead of failed transfers.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def retry(app, task, ids, publication: bool, as_json: bool) -> None:
    """Operator: put FAILED (and KILLED) transfers back to NEW, or failed publication."""
    id_list = [i.strip() for i in ids.split(",") if i.strip()] if ids else None
    if (task is None) == (id_list is None):
        raise ValidationError("--task/--ids", "give exactly one of --task or --ids")
    backend = app.backend()
    count = (backend.retry_publication if publication else backend.retry_failed)(task=task, ids=id_list)
    if as_json:
        echo_json({"retried": count, "publication": publication})
    else:
        console.print(f"{count} {'publications' if publication else 'transfers'} back to NEW")
