"""What every subcommand shares: configuration loading, output, errors and exit codes.

Exit codes (documented in ``aso --help`` of each command and in docs/operations.md):
0 success (also: a pass that found its lock held and did nothing), 1 the work failed or
left something undone, 2 bad input or configuration, 3 a backend or service unreachable.

Every error is one line on stderr, ``error: ...``, printed by :class:`CliError`; the
``aso`` group maps every exception to one with :func:`report`, in one place.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, NoReturn
from urllib.parse import parse_qsl

import click
from rich.console import Console

from aso.config import Config, load_config
from aso.errors import (
    AsoError,
    AuthenticationError,
    BackendUnavailable,
    ConfigError,
    FencedError,
    ForbiddenError,
    ValidationError,
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3
EXIT_FENCED = 4

console = Console()
#: progress bars on a terminal only; messages go through click.echo, never wrapped
err_console = Console(stderr=True)
log = logging.getLogger("aso.cli")


@dataclass
class AppContext:
    config_path: str | None = None
    log_level: str | None = None
    log_format: str | None = None
    _config: Config | None = field(default=None, repr=False)

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
            setup_logging(self.log_level or self._config.aso.log_level,
                          self.log_format or self._config.aso.log_format)
        return self._config

    def backend(self):
        from aso.state import backend_from_config

        return backend_from_config(self.config)


pass_app = click.make_pass_decorator(AppContext)


def setup_logging(level: str = "INFO", log_format: str = "text") -> None:
    """One line per event on stderr, stamped with the log context (:mod:`aso.logs`): rich
    text on a terminal, plain timestamped text under cron, or one JSON object per line."""
    from aso.logs import configure

    configure(level, log_format,
              rich_console=err_console if log_format == "text" and sys.stderr.isatty() else None)


@contextlib.contextmanager
def progress_bar(label: str, total: int, *, show: bool = True) -> Iterator[Callable[[int], None]]:
    """``advance(n)`` for a long command: a rich progress bar on a terminal (stderr), nothing
    at all otherwise (cron's mail holds only the summary)."""
    if not show or not sys.stderr.isatty():
        yield lambda n: None
        return
    from rich.progress import Progress

    with Progress(console=err_console, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


class CliError(click.ClickException):
    """An error the command reports: one line on stderr, the README's exit code.

    Raised by commands (and made from every other exception by :func:`as_cli_error`);
    click prints it with :meth:`show` and exits with ``exit_code``.
    """

    def __init__(self, message: str, exit_code: int = EXIT_FAILED):
        line = one_line(message)
        if line != " ".join(str(message).split()):
            ensure_logging()
            log.debug("whole message: %s", message)
        super().__init__(line)
        self.exit_code = exit_code

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", file=file or click.get_text_stream("stderr"))


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Stop the command with ``message`` and exit ``code``."""
    raise CliError(message, code)


#: an error line longer than this is cut (the whole message goes to the log at DEBUG)
MAX_LINE = 600
_QUERY = re.compile(r"\?[^\s'\"()]+")
_IDS = re.compile(r"""(?:['"]?[0-9a-fA-F]{16,}['"]?(?:,\s*|\s+|$)){4,}""")


def _short_query(match: re.Match) -> str:
    pairs = parse_qsl(match.group(0)[1:], keep_blank_values=True)
    counts: dict[str, int] = {}
    for key, _ in pairs:
        counts[key] = counts.get(key, 0) + 1
    if len(match.group(0)) < 200 and max(counts.values(), default=0) < 4:
        return match.group(0)
    kept = [f"{k}={v}" for k, v in pairs if counts[k] == 1]
    many = [f"{k}=[{n} {k}s]" if k else f"[{n} values]" for k, n in counts.items() if n > 1]
    return "?" + "&".join(kept + many)


def one_line(message: str) -> str:
    """``message`` as one line: no line breaks, long id lists summarised ("150 ids"), cut at
    :data:`MAX_LINE` characters. Whoever shortens a message logs the whole one at DEBUG."""
    text = " ".join(str(message).split())
    text = _QUERY.sub(_short_query, text)
    text = _IDS.sub(lambda m: f"[{len(re.findall(r'[0-9a-fA-F]{16,}', m.group(0)))} ids] ", text).strip()
    if len(text) > MAX_LINE:
        text = text[: MAX_LINE - 40].rstrip() + "… (cut; whole message at --log-level DEBUG)"
    return text


def _usage_line(exc: click.UsageError) -> str:
    where = exc.ctx.command_path if exc.ctx else "aso"
    return f"{where}: {exc.format_message()} (see '{where} --help')"


def as_cli_error(exc: BaseException) -> CliError:
    """THE mapping from an exception to the README's exit codes:
    2 bad input or configuration (also a state server refusing our token or role),
    3 a backend unreachable, 4 fenced (another worker took this one's work over), 1 anything else; unexpected exceptions are internal errors."""
    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, click.UsageError):
        return CliError(_usage_line(exc), EXIT_BAD_INPUT)
    if isinstance(exc, click.ClickException):
        return CliError(exc.format_message(), exc.exit_code)
    if isinstance(exc, (ValidationError, ConfigError)):
        return CliError(str(exc), EXIT_BAD_INPUT)
    if isinstance(exc, (AuthenticationError, ForbiddenError)):
        return CliError(f"state server refused the request: {exc} (check state.token and its role)", EXIT_BAD_INPUT)
    if isinstance(exc, BackendUnavailable):
        return CliError(str(exc), EXIT_UNAVAILABLE)
    if isinstance(exc, FencedError):
        return CliError(f"{exc}; this pass stopped (the next one heartbeats and rejoins)", EXIT_FENCED)
    if isinstance(exc, AsoError):
        return CliError(str(exc) or type(exc).__name__, EXIT_FAILED)
    return CliError(f"internal error: {type(exc).__name__}: {exc} (run with --log-level DEBUG / see log)", EXIT_FAILED)


def report(exc: BaseException) -> CliError:
    """The :class:`CliError` for ``exc``, with the whole story logged at DEBUG."""
    error = as_cli_error(exc)
    if error is not exc:
        ensure_logging()
        log.debug("%s: %s", type(exc).__name__, exc, exc_info=exc)
    return error


def ensure_logging() -> None:
    """Logging for an error raised before the configuration was read: only when --log-level
    asks for it (at the default level nothing logged at DEBUG would show anyway)."""
    if getattr(logging.getLogger(), "_aso_configured", False):
        return
    ctx = click.get_current_context(silent=True)
    params = ctx.find_root().params if ctx else {}  # parsed even before aso's callback ran
    if params.get("log_level"):
        setup_logging(params["log_level"], params.get("log_format") or "text")
