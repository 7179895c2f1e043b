"""The ``aso`` command: a thin click layer over the library.

Subcommands live in modules of this package and are imported only when used, so
``aso status`` does not pay for importing the FTS service or the REST server.
"""

from __future__ import annotations

import importlib

import click

from aso import __version__

#: command name -> "module:attribute" (modules relative to aso.cli)
COMMANDS: dict[str, str] = {
    "init": "setup:init",
    "config-reference": "setup:config_reference",
    "server": "state_cmds:server",
    "inject": "state_cmds:inject",
    "status": "state_cmds:status",
    "kill": "state_cmds:kill",
    "retry": "state_cmds:retry",
    "fts-server": "fts_cmds:fts_server",
    "transfer": "component_cmds:transfer",
    "stager": "component_cmds:stager",
    "monitor": "component_cmds:monitor",
    "reporter": "component_cmds:reporter",
    "receiver": "receiver_cmds:receiver",
    "retry-manager": "component_cmds:retry_manager",
    "publisher": "publisher_cmds:publisher",
    "catalog": "catalog_cmds:catalog",
    "topology": "topology_cmds:topology",
    "demo": "demo_cmds:demo",
    "web": "web_cmds:web",
    "archive": "archive_cmds:archive",
}


class LazyGroup(click.Group):
    """Loads subcommands when used, and turns whatever a command raises into one error line
    and the README's exit code (:func:`aso.cli.common.report`), for every command alike."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return self._load(name)

    @staticmethod
    def _load(name: str) -> click.Command | None:
        """The command ``name`` (None when there is no such command). A command module
        that cannot be imported is an error, never a command that silently disappears."""
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(f"aso.cli.{module_name}")
            command = getattr(module, attr)
        except Exception as exc:
            from aso.cli.common import EXIT_FAILED, CliError, report

            report(exc)  # the traceback, at DEBUG
            raise CliError(f"internal error: command 'aso {name}' cannot be loaded: "
                           f"{type(exc).__name__}: {exc} (run with --log-level DEBUG / see log)", EXIT_FAILED) from None
        if not isinstance(command, click.Command):
            raise TypeError(f"aso.cli.{module_name}.{attr} is not a click command")
        return command

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:  # e.g. aso --bogus: one line, exit 2
            from aso.cli.common import report

            raise report(exc) from None

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, click.exceptions.NoArgsIsHelpError, KeyboardInterrupt):
            raise
        except Exception as exc:
            from aso.cli.common import report

            raise report(exc) from None


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="aso")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="ASO_CONFIG",
    help="Configuration file (default: $ASO_CONFIG, then ./aso.toml).",
)
@click.option("--log-level", default=None, type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              help="Override aso.log_level.")
@click.option("--log-format", default=None, type=click.Choice(["text", "json"], case_sensitive=False),
              help="Override aso.log_format: text lines, or one JSON object per line.")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, log_level: str | None, log_format: str | None) -> None:
    """Asynchronous stage-out: move grid job outputs with FTS3 and publish them."""
    from aso.cli.common import AppContext

    ctx.obj = AppContext(config_path=config_path, log_level=log_level,
                         log_format=log_format.lower() if log_format else None)


def _limit_malloc_arenas(arenas: int = 1) -> None:
    """Components run many threads that each allocate a little; glibc gives threads their own
    malloc arenas, and the fragmentation made a 100k-file pass's resident memory swing
    between 120 and 450 MB from run to run (benchmarks/pipeline.py). Python's threads take
    turns under the GIL anyway, so one arena costs no speed that was measurable. Same as
    MALLOC_ARENA_MAX=1, which wins when set."""
    import os
    import sys

    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def main() -> None:
    _limit_malloc_arenas()
    cli(prog_name="aso")
