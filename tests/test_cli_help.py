"""Every installed command documents itself; the state commands are all installed."""

import pytest
from click.testing import CliRunner

from aso.cli import COMMANDS, LazyGroup, cli

INSTALLED = sorted(name for name in COMMANDS if LazyGroup._load(name) is not None)


def test_state_backend_commands_are_installed():
    assert {"init", "config-reference", "server", "inject", "status", "kill", "retry"} <= set(INSTALLED)


@pytest.mark.parametrize("name", INSTALLED)
def test_every_installed_command_has_help(name):
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    assert LazyGroup._load(name).help, f"aso {name} has no help text"


def test_top_level_help_lists_installed_commands():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in INSTALLED:
        assert name in result.output
