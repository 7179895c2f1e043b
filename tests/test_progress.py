"""Long interactive commands: a progress bar on a terminal, nothing but their summary under
cron. The commands run as children, on a pseudo-terminal and on plain pipes."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
from pathlib import Path

import pytest

from aso.cli.state_cmds import INJECT_BATCH
from tests.procs import aso_command

#: what rich draws a bar with
BAR = "━"


def run_on_pty(args: list[str], cwd: Path, timeout: float = 300) -> tuple[int, str]:
    """Run ``args`` with stdout and stderr on a pseudo-terminal; returns (exit code, all it wrote)."""
    master, slave = os.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, cwd=cwd, env=env)
    os.close(slave)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                proc.kill()
                pytest.fail(f"{args}: no output for {timeout} s")
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
    return proc.wait(timeout=60), b"".join(chunks).decode("utf-8", "replace")


@pytest.fixture
def installation(tmp_path):
    res = subprocess.run(aso_command("init", str(tmp_path / "aso")), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return tmp_path / "aso"


def requests_file(folder: Path, n: int, tag: str) -> Path:
    path = folder / f"{tag}.json"
    path.write_text(json.dumps([{
        "username": "alice", "taskname": "221122_000000:alice_big", "source": "T2_XX_Source",
        "destination": "T2_YY_Dest", "source_lfn": f"/store/temp/user/alice/{tag}/{i}.root",
        "destination_lfn": f"/store/user/alice/{tag}/{i}.root", "filesize": 1000, "checksum": "0000abcd",
    } for i in range(n)]))
    return path


def test_inject_shows_a_bar_on_a_terminal_and_only_its_summary_under_cron(installation):
    n = 2 * INJECT_BATCH + 1  # three batches
    config = str(installation / "aso.toml")
    code, out = run_on_pty(aso_command("--config", config, "inject", str(requests_file(installation, n, "tty"))),
                           installation)
    assert code == 0, out
    assert BAR in out and "injecting" in out, out[-2000:]
    assert f"inserted {n}, re-initialised 0, skipped 0" in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)

    res = subprocess.run(aso_command("--config", config, "inject", str(requests_file(installation, n, "cron"))),
                         capture_output=True, text=True, cwd=installation)
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"inserted {n}, re-initialised 0, skipped 0\n" and res.stderr == "", (res.stdout, res.stderr)
    # again: every row is recorded already, nothing written twice
    res = subprocess.run(aso_command("--config", config, "inject", str(installation / "cron.json")),
                         capture_output=True, text=True, cwd=installation)
    assert res.stdout.startswith(f"inserted 0, re-initialised 0, skipped {n}\n"), res.stdout


def test_bad_request_in_a_late_batch_writes_nothing(installation):
    config = str(installation / "aso.toml")
    path = requests_file(installation, INJECT_BATCH + 10, "bad")
    requests = json.loads(path.read_text())
    del requests[INJECT_BATCH + 3]["filesize"]
    path.write_text(json.dumps(requests))
    res = subprocess.run(aso_command("--config", config, "inject", str(path)), capture_output=True, text=True,
                         cwd=installation)
    assert res.returncode == 2 and res.stderr == f"error: [{INJECT_BATCH + 3}].filesize: is required\n", res.stderr
    res = subprocess.run(aso_command("--config", config, "status", "--json"), capture_output=True, text=True,
                         cwd=installation)
    assert json.loads(res.stdout) == [], res.stdout


@pytest.mark.parametrize("command", ["transfer", "publisher"])
def test_component_pass_bar_on_a_terminal_summary_only_under_cron(installation, command):
    config = str(installation / "aso.toml")
    code, out = run_on_pty(aso_command("--config", config, command), installation)
    assert code == 0, out
    assert BAR in out, out
    res = subprocess.run(aso_command("--config", config, command), capture_output=True, text=True, cwd=installation)
    # the summary: the log line, and the publisher prints it on stdout too (one line)
    assert res.returncode == 0, res
    if command == "transfer":
        assert res.stdout == "", res.stdout
    else:
        assert res.stdout.startswith("publisher: ") and res.stdout.count("\n") == 1, res.stdout
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and f"{command}: " in lines[0] and BAR not in res.stderr, res.stderr
