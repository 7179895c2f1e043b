"""``aso transfer``, ``aso monitor``, ``aso reporter``, ``aso retry-manager`` (and ``aso
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
        return fn
    return wrap


def _with_progress(label: str, as_json: bool, body: Callable):
    """Run body(progress) with a rich progress bar on a terminal, plainly otherwise."""
    if as_json or not sys.stderr.isatty():
        return body(None)
    from rich.progress import Progress

    with Progress(console=err_console, transient=True) as bar:
        task = bar.add_task(label, total=None)
        return body(lambda done, total: bar.update(task, completed=done, total=total))


def run_component(app, name: str, label: str, loop: bool, interval: float, as_json: bool, *,
                  show: Callable | None = None, what: str = "the work") -> None:
    """Build component ``name``'s pass from the configuration and run it under its lock
    (once or in a loop); the exit code says how the last pass went. ``show(summary)``
    renders a pass (default: the line goes to the log only, ``--json`` prints it)."""
    from aso.components.build import build_pass
    from aso.components.runner import run_passes

    config = app.config

    def on_summary(summary) -> None:
        # the summary line itself goes to the log (run_passes); --json adds it for scripts
        if as_json:
            echo_json(summary.as_dict())
        elif show is not None:
            show(summary)

    from aso.components.passes import reporter_for

    recorder = reporter_for(config, name)

    def on_summary_and_record(summary) -> None:
        recorder.ended(summary, pass_exit(name, summary, what)[0])
        on_summary(summary)

    try:
        with build_pass(name, config) as one_pass:
            outcome = run_passes(config.aso.lock_dir, name, lambda: _with_progress(label, as_json, one_pass),
                                 loop=loop, interval=interval, on_summary=on_summary_and_record,
                                 on_start=recorder.started)
    except BaseException as exc:
        if not isinstance(exc, (KeyboardInterrupt, SystemExit)):
            recorder.ended(None, as_cli_error(exc).exit_code)  # a pass that raised ended too
        raise
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
def transfer(app, loop: bool, interval: float, as_json: bool) -> None:
    """Acquire new transfers and submit them to FTS: per user, per link, in jobs of at most
    [transfer] max_files_per_job files.

    A pass first completes submissions a killed pass left half done (nothing is submitted
    twice). Users without a usable proxy are skipped; their transfers wait.

    Exit codes: 0 done (also when another pass holds the lock), 1 some of the work failed
    and waits for the next pass, 2 bad configuration, 3 the state backend or FTS unreachable.
    """
    run_component(app, "transfer", "submitting per user", loop, interval, as_json)


@click.command()
@_pass_options(60.0)
@pass_app
def monitor(app, loop: bool, interval: float, as_json: bool) -> None:
    """Poll FTS in bulk for every submitted job and hand finished files to the reporter.

    Prints what it polled and what changed. Jobs FTS no longer knows and jobs past
    [monitor] job_timeout / file_timeout are reported failed with a reason that says so.

    Exit codes: 0 done (also when another pass holds the lock), 1 some of the work failed
    and waits for the next pass, 2 bad configuration, 3 the state backend or FTS unreachable.
    """
    run_component(app, "monitor", "polling FTS", loop, interval, as_json)


@click.command()
@_pass_options(60.0)
@pass_app
def reporter(app, loop: bool, interval: float, as_json: bool) -> None:
    """Record FTS results: FINISHED → DONE; failures → RETRY or FAILED (retry count,
    [reporter] permanent_errors). Late results for rows no longer in flight are ignored.

    Exit codes: 0 done (also when another pass holds the lock), 1 some of the work failed
    and waits for the next pass, 2 bad configuration, 3 the state backend or FTS unreachable.
    """
    run_component(app, "reporter", "reporting per user", loop, interval, as_json)


@click.command("retry-manager")
@_pass_options(300.0)
@pass_app
def retry_manager(app, loop: bool, interval: float, as_json: bool) -> None:
    """RETRY rows back to NEW after [retry_manager] cooloff; kill requests canceled in FTS
    and marked KILLED; rows stuck in ACQUIRED or SUBMITTED recovered.

    Exit codes: 0 done (also when another pass holds the lock), 1 some of the work failed
    and waits for the next pass, 2 bad configuration, 3 the state backend or FTS unreachable.
    """
    run_component(app, "retry-manager", "retry manager", loop, interval, as_json)
