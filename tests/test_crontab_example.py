"""crontab.example names only real commands, each component once, with the variable the CLI reads."""

from __future__ import annotations

import re
from pathlib import Path

from aso.cli import COMMANDS, cli

CRONTAB = Path(__file__).resolve().parent.parent / "crontab.example"
COMPONENTS = {"transfer", "stager", "monitor", "reporter", "retry-manager", "publisher"}


def test_crontab_runs_every_component_once_with_real_commands():
    lines = [line for line in CRONTAB.read_text().splitlines() if line.strip() and not line.startswith("#")]
    commands = [m.group(1) for line in lines if (m := re.search(r"\$ASO (\S+)", line))]
    assert sorted(commands) == sorted(COMPONENTS)
    assert set(commands) <= set(COMMANDS)
    for line in lines:
        if "$ASO " in line:
            assert len(line.split()[:5]) == 5 and ">>" in line  # a schedule and a log file
    config_option = next(p for p in cli.params if p.name == "config_path")
    assert any(line.startswith(f"{config_option.envvar}=") for line in lines)
    # the receiver, long-running and optional, is there to uncomment
    receiver = [line for line in CRONTAB.read_text().splitlines() if "$ASO receiver" in line]
    assert len(receiver) == 1 and receiver[0].startswith("# *") and "receiver" in COMMANDS
