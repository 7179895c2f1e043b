"""``aso transfer``, ``aso stager``, ``aso monitor``, ``aso reporter``, ``aso retry-manager`` (and ``aso
publisher``, in :mod:`aso.cli.publisher_cmds`): one pass each (or a loop of them), built by
:func:`aso.components.build.build_pass` and run by :func:`aso.components.runner.run_passes`."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any

import click

from aso.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_UNAVAILABLE,
    as_cli_error,
    echo_json,
    err_console,
    fail,
    pass_app,
)


def _pass_options(default_interval: float):
    def wrap(fn):
        fn = click.option("--json", "as_json", is_flag=True, help="Print each pass's summary as JSON.")(fn)
        fn = click.option("--interval", type=float, default=default_interval, show_default=True,
                          help="Seconds between passes with --loop.")(fn)
        fn = click.option("--loop", is_flag=True, help="Run passes until SIGTERM or Ctrl-C instead of one.")(fn)
        return metrics_port_option(fn)
    return wrap


def metrics_port_option(fn):
    # A command-line option only, never one in the shared aso.toml: every looping component
    # reads that file, and they cannot all listen on one port.
    return click.option("--metrics-port", type=click.IntRange(0, 65535), default=0,
                        help="With --loop: serve the pass metrics on http://127.0.0.1:PORT/metrics "
                             "(0 = not served).")(fn)


def _with_progress(label: str, as_json: bool, body: Callable):
    """Run body(progress) with a rich progress bar on a terminal, plainly otherwise."""
    if as_json or not sys.stderr.isatty():
        return body(None)
    from rich.progress import Progress

    with Progress(console=err_console, transient=True) as bar:
        task = bar.add_task(label, total=None)
        return body(lambda done, total: bar.update(task, completed=done, total=total))


def run_component(app, name: str, label: str, loop: bool, interval: float, as_json: bool, *,
                  show: Callable | None = None, what: str = "the work", metrics_port: int = 0) -> None:
    """Build component ``name``'s pass from the configuration and run it under its lock
    (once or in a loop); the exit code says how the last pass went. ``show(summary)``
    renders a pass (default: the line goes to the log only, ``--json`` prints it).
    Each pass's metrics go to ``[metrics] textfile_dir``, and with ``loop`` are served on
    ``metrics_port``."""
    from aso.components.build import build_pass
    from aso.components.passes import reporter_for
    from aso.components.runner import run_passes

    config = app.config
    # served only by a loop: a single pass ends before anything could scrape it
    port = (metrics_port or 0) if loop else 0
    on_pass_end = _pass_metrics(config, name, port)

    def on_summary(summary) -> None:
        # the summary line itself goes to the log (run_passes); --json adds it for scripts
        if as_json:
            echo_json(summary.as_dict())
        elif show is not None:
            show(summary)

    recorder = reporter_for(config, name)

    def on_end(summary, seconds: float, exc: BaseException | None) -> None:
        if summary is None and exc is None:
            return  # interrupted (Ctrl-C): no pass to speak of
        code = as_cli_error(exc).exit_code if summary is None else pass_exit(name, summary, what)[0]
        recorder.ended(summary, code)
        if on_pass_end is not None:
            on_pass_end(summary, seconds, code)

    try:
        with build_pass(name, config) as one_pass:
            outcome = run_passes(config.aso.lock_dir, name, lambda: _with_progress(label, as_json, one_pass),
                                 loop=loop, interval=interval, on_summary=on_summary, on_start=recorder.started,
                                 on_pass_end=on_end)
    finally:
        recorder.close()
    if outcome.lock_held:
        click.echo(outcome.message if name == "publisher" else
                   f"another 'aso {name}' pass is running; this one did nothing", err=True)
        return
    code, message = pass_exit(name, outcome.summary, what)
    if code:
        fail(message, code)


def pass_exit(name: str, summary: Any, what: str = "the work") -> tuple[int, str]:
    """The exit code of a pass from its summary, and the line that explains it: 2 a
    configuration to fix, 3 something unreachable, 1 other errors, 0 done. The one rule for
    the command's exit code and for the pass's record."""
    if summary is None:
        return 0, ""
    errors = list(getattr(summary, "errors", ()))
    verb = "wait" if what.endswith("s") else "waits"
    misconfigured = list(getattr(summary, "misconfigured", ()))
    if misconfigured:
        return EXIT_BAD_INPUT, f"{name}: {'; '.join(misconfigured)} (the rows that name it went back to NEW)"
    unreachable = _unreachable(summary)
    if unreachable:
        return EXIT_UNAVAILABLE, (f"{name}: unreachable: {', '.join(unreachable)}; {len(errors)} error(s) in this "
                                  f"pass, {what} {verb} for the next pass (see the log)")
    if errors:
        return EXIT_FAILED, (f"{name}: {len(errors)} error(s) in this pass, {what} {verb} for the next pass "
                             f"(see the log); first: {errors[0]}")
    return 0, ""


def _pass_metrics(config, name: str, port: int) -> Callable | None:
    """A hook ``(summary, seconds, exit code)`` that records each pass's metrics (None
    when neither a textfile folder nor a port is configured)."""
    folder = config.metrics.textfile_dir
    if not folder and not port:
        return None
    from aso.components.passes import pass_counts
    from aso.metrics.passes import PassMetrics

    metrics = PassMetrics(name, folder)
    if port:
        try:
            metrics.serve(port)
        except OSError as exc:
            fail(f"{name}: cannot serve metrics on 127.0.0.1:{port}: {exc}", EXIT_BAD_INPUT)

    def on_pass_end(summary, seconds: float, code: int) -> None:
        files, failures = pass_counts(summary) if summary is not None else (0, 1)
        metrics.record(seconds, files, failures, code)

    return on_pass_end


#: How a pass's errors say a backend could not be reached, where the summary has no
#: structured list: the retry manager's FTS cancels, and any component that met the state
#: backend's BackendUnavailable for one user and went on with the others.
_CANNOT_REACH = (
    (re.compile(r"cannot reach FTS at (\S+) "), "FTS {}"),
    (re.compile(r"state server (\S+) unreachable"), "state server {}"),
    (re.compile(r"\b(state database(?: \S+?)?):"), "{}"),
)


def _unreachable(summary) -> list[str]:
    """What a pass could not reach: 'FTS <endpoint>', 'state server <url>', ..."""
    found = {f"FTS {endpoint}" for endpoint in getattr(summary, "unreachable", None) or ()}
    for error in getattr(summary, "errors", ()):
        for pattern, label in _CANNOT_REACH:
            found.update(label.format(m.group(1)) for m in pattern.finditer(error))
    return sorted(found)


@click.command()
@_pass_options(60.0)
@pass_app
def transfer(app, loop: bool, interval: float, as_json: bool, metrics_port: int | None) -> None:
    """Acquire new transfers and submit them to FTS: per user, per link, in jobs of at most
    [transfer] max_files_per_job files.

    A pass first completes submissions a killed pass left half done (nothing is submitted
    twice). Users without a usable proxy are skipped; their transfers wait.

    Exit codes: 0 done (also when another pass holds the lock), 1 some of the work failed
    and waits for the next pass, 2 bad configuration, 3 the state backend or FTS unreachable.
    """
    run_component(app, "transfer", "submitting per user", loop, interval, as_json, metrics_port=metrics_port)


@click.command()
@_pass_options(600.0)
@pass_app
def stager(app, loop: bool, interval: float, as_json: bool, metrics_port: int | None) -> None:
    """Submit stage-in requests (type stagein) to FTS as staging-only jobs: the file is
    brought online from tape in place ([staging] bring_online, stagein_pin_lifetime).
    The monitor and reporter then finish them like transfers (staged: DONE).

    Only stage-in rows are acquired (aso transfer leaves them alone); a row whose site is
    not a tape site (tape = true in [sites]) fails with a reason starting STAGEIN:.

    Exit codes: 0 done (also when another pass holds the lock), 1 some of the work failed
    and waits for the next pass, 2 bad configuration, 3 the state backend or FTS unreachable.
    """
    run_component(app, "stager", "staging per user", loop, interval, as_json, metrics_port=metrics_port)


@click.command()
@_pass_options(60.0)
@pass_app
def monitor(app, loop: bool, interval: float, as_json: bool, metrics_port: int | None) -> None:
    """Poll FTS in bulk for every submitted job and hand finished files to the reporter.

    Prints what it polled and what changed. Jobs FTS no longer knows and jobs past
    [monitor] job_timeout / file_timeout are reported failed with a reason that says so.

    Exit codes: 0 done (also when another pass holds the lock), 1 some of the work failed
    and waits for the next pass, 2 bad configuration, 3 the state backend or FTS unreachable.
    """
    run_component(app, "monitor", "polling FTS", loop, interval, as_json, metrics_port=metrics_port)


@click.command()
@_pass_options(60.0)
@pass_app
def reporter(app, loop: bool, interval: float, as_json: bool, metrics_port: int | None) -> None:
    """Record FTS results: FINISHED → DONE; failures → RETRY or FAILED (retry count,
    [reporter] permanent_errors). Late results for rows no longer in flight are ignored.

    Exit codes: 0 done (also when another pass holds the lock), 1 some of the work failed
    and waits for the next pass, 2 bad configuration, 3 the state backend or FTS unreachable.
    """
    run_component(app, "reporter", "reporting per user", loop, interval, as_json, metrics_port=metrics_port)


@click.command("retry-manager")
@_pass_options(300.0)
@pass_app
def retry_manager(app, loop: bool, interval: float, as_json: bool, metrics_port: int | None) -> None:
    """RETRY rows back to NEW after [retry_manager] cooloff; kill requests canceled in FTS
    and marked KILLED; rows stuck in ACQUIRED or SUBMITTED recovered.

    Exit codes: 0 done (also when another pass holds the lock), 1 some of the work failed
    and waits for the next pass, 2 bad configuration, 3 the state backend or FTS unreachable.
    """
    run_component(app, "retry-manager", "retry manager", loop, interval, as_json, metrics_port=metrics_port)
