"""What every subcommand shares: configuration loading, output, errors and exit codes.

Exit codes (documented in ``aso --help`` of each command and in docs/operations.md):
0 success (also: a pass that found its lock held and did nothing), 1 the work failed or
left something undone, 2 bad input or configuration, 3 a backend or service unreachable.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click
from rich.console import Console

from aso.config import Config, load_config
from aso.errors import AsoError, BackendUnavailable, ConfigError, ValidationError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3

console = Console()
err_console = Console(stderr=True)


@dataclass
class AppContext:
    config_path: str | None = None
    log_level: str | None = None
    _config: Config | None = field(default=None, repr=False)

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
            setup_logging(self.log_level or self._config.aso.log_level)
        return self._config

    def backend(self):
        from aso.state.backend import backend_from_config

        return backend_from_config(self.config)


pass_app = click.make_pass_decorator(AppContext)


def setup_logging(level: str = "INFO") -> None:
    """Rich log lines on a terminal, plain timestamped lines under cron."""
    root = logging.getLogger()
    if getattr(root, "_aso_configured", False):
        root.setLevel(level.upper())
        return
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=err_console, show_path=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper())
    root._aso_configured = True  # type: ignore[attr-defined]


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def fail(message: str, code: int = EXIT_FAILED) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    sys.exit(code)


def handle_errors(func: Callable) -> Callable:
    """Turn library errors into a clear message and the documented exit code."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (ValidationError, ConfigError) as exc:
            fail(str(exc), EXIT_BAD_INPUT)
        except BackendUnavailable as exc:
            fail(str(exc), EXIT_UNAVAILABLE)
        except AsoError as exc:
            fail(str(exc), EXIT_FAILED)

    return wrapper
