"""The systemd units in ``systemd/``: systemd's own checker where it is installed, and always
the contract aso needs from them: every looping component has a unit, each ExecStart is an
``aso`` command line (or gunicorn's) that the command's own parser accepts, and each unit
restarts on failure, runs as the service account with ASO_CONFIG and the hardening, and
stops with SIGTERM."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
from pathlib import Path

import click
import pytest

from aso.cli import COMMANDS, LazyGroup, cli

UNITS = Path(__file__).parents[1] / "systemd"
SERVICES = sorted(UNITS.glob("*.service"))
ASO = "/opt/aso/bin/aso"
GUNICORN = "/opt/aso/bin/gunicorn"


class _MultiDict(dict):
    """configparser's section dict that keeps every value of a key systemd allows to repeat
    (Environment=, ReadWritePaths=, ...): with strict=False each new value is appended."""

    def __setitem__(self, key, value):
        if key in self and isinstance(value, list) and isinstance(self[key], list):
            self[key].extend(value)
        else:
            super().__setitem__(key, value)


def parse_unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, dict_type=_MultiDict,
                                       empty_lines_in_values=False, comment_prefixes=("#", ";"))
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(path.read_text(), source=str(path))
    return parser


def values(unit: configparser.ConfigParser, section: str, key: str) -> list[str]:
    return unit.get(section, key, fallback="").splitlines() if unit.has_section(section) else []


def looping_commands() -> list[str]:
    """The ``aso`` commands that have ``--loop``: each runs as a daemon under a unit."""
    group = LazyGroup()
    found = []
    for name in COMMANDS:
        command = group.get_command(click.Context(cli), name)
        if any("--loop" in getattr(p, "opts", ()) for p in command.params):
            found.append(name)
    return found


def test_every_looping_component_has_a_unit():
    names = {p.stem for p in SERVICES}
    loopers = looping_commands()
    assert {"transfer", "monitor", "reporter", "retry-manager", "publisher"} <= set(loopers)
    missing = [c for c in loopers if f"aso-{c}" not in names]
    assert not missing, f"no unit for {missing}"
    assert {"aso-server", "aso-fts-server", "aso-receiver"} <= names


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.name)
def test_unit_has_what_aso_needs(path: Path):
    unit = parse_unit(path)
    assert unit.sections() == ["Unit", "Service", "Install"], unit.sections()
    assert unit.get("Unit", "Description").strip()
    one = {key: unit.get("Service", key, fallback=None) for key in (
        "Type", "User", "Restart", "KillSignal", "TimeoutStopSec", "NoNewPrivileges", "ProtectSystem", "PrivateTmp")}
    assert one == {"Type": "simple", "User": "aso", "Restart": "on-failure", "KillSignal": "SIGTERM",
                   "TimeoutStopSec": one["TimeoutStopSec"], "NoNewPrivileges": "yes", "ProtectSystem": "strict",
                   "PrivateTmp": "yes"}, one
    assert 30 <= int(one["TimeoutStopSec"]) <= 900, "time for a pass (or a batch) to finish"
    assert "ASO_CONFIG=/srv/aso/aso.toml" in values(unit, "Service", "Environment")
    assert "/srv/aso" in values(unit, "Service", "ReadWritePaths")
    assert values(unit, "Service", "RestartPreventExitStatus") == ["2"], "bad configuration: no restart loop"
    assert values(unit, "Install", "WantedBy") == ["aso.target"]
    assert (UNITS / "aso.target").is_file()
    (exec_start,) = values(unit, "Service", "ExecStart")
    argv = shlex.split(exec_start)
    if argv[0] == GUNICORN:
        check_gunicorn(argv[1:])
        return
    assert argv[0] == ASO, exec_start
    name = check_aso_command(argv[1:])
    assert path.stem == f"aso-{name}", f"{path.name} runs aso {name}"
    if name in looping_commands():
        assert "--loop" in argv, f"{path.name}: a component unit runs passes in a loop"


def check_aso_command(args: list[str]) -> str:
    """Parse ``args`` as the ``aso`` command line does (no command runs): the subcommand
    must exist and accept every option given. Returns the subcommand's name."""
    try:
        with cli.make_context("aso", list(args)) as ctx:
            # the subcommand and its arguments: click >= 8.2 keeps the name in _protected_args
            protected = vars(ctx).get("_protected_args", vars(ctx).get("protected_args", []))
            name, *rest = [*protected, *ctx.args]
            command = cli.get_command(ctx, name)
            assert command is not None, f"no command aso {name}"
            command.make_context(name, rest, parent=ctx)
    except click.UsageError as exc:
        pytest.fail(f"aso {' '.join(args)}: {exc.format_message()}")
    return name


def check_gunicorn(args: list[str]) -> None:
    """gunicorn's own parser accepts the options, and the app is aso's entry point."""
    gunicorn_config = pytest.importorskip("gunicorn.config", reason="gunicorn is the 'server' extra")
    parsed = gunicorn_config.Config().parser().parse_args(args)
    assert parsed.args == ["aso.state.server:app_from_env()"], parsed.args
    from aso.state.server import app_from_env

    assert callable(app_from_env)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed (the checks above still ran)")
def test_systemd_analyze_verify(tmp_path):
    """systemd's checker on copies whose ExecStart binaries exist (it refuses a missing one):
    any line it prints about a unit (an unknown key, a bad value) fails the test."""
    fake = tmp_path / "bin"
    fake.mkdir()
    for name in ("aso", "gunicorn"):
        script = fake / name
        script.write_text("#!/bin/sh\nexit 0\n")
        script.chmod(0o755)
    copies = []
    for path in sorted(UNITS.glob("*.service")) + sorted(UNITS.glob("*.target")):
        text = path.read_text().replace(ASO, str(fake / "aso")).replace(GUNICORN, str(fake / "gunicorn"))
        (tmp_path / path.name).write_text(text)
        copies.append(str(tmp_path / path.name))
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", "--generators=no", *copies],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0 and not res.stdout.strip() and not res.stderr.strip(), res.stdout + res.stderr
