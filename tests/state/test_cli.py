"""The state commands as an operator runs them: aso inject, status, kill, retry."""

from __future__ import annotations

import json
import subprocess

import pytest
from click.testing import CliRunner

from aso.cli import cli
from aso.installation import init_installation
from tests.procs import aso_command
from tests.state.servers import start_state_server
from tests.state.test_contract import request


@pytest.fixture
def local_config(tmp_path):
    return str(init_installation(tmp_path / "inst"))


def run(config, *args, input=None):
    return CliRunner().invoke(cli, ["--config", config, *args], input=input)


def test_inject_status_kill_retry_locally(local_config, tmp_path):
    requests_file = tmp_path / "req.json"
    requests_file.write_text(json.dumps([request(i) for i in range(4)] + [request(9, user="bob", task="task_b")]))
    result = run(local_config, "inject", str(requests_file), "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)["inserted"]) == 5
    again = run(local_config, "inject", "-", input=requests_file.read_text())
    assert again.exit_code == 0 and "skipped 5" in again.output

    status = run(local_config, "status", "--json")
    counts = {(r["username"], r["transfer_state"]): r["count"] for r in json.loads(status.output)}
    assert counts == {("alice", "NEW"): 4, ("bob", "NEW"): 1}
    table = run(local_config, "status", "--user", "alice")
    assert table.exit_code == 0 and "task_a" in table.output and "bob" not in table.output

    killed = run(local_config, "kill", "--task", "task_a", "--json")
    assert killed.exit_code == 0 and len(json.loads(killed.output)["killed"]) == 4
    from aso.config import load_config
    from aso.state import backend_from_config

    backend = backend_from_config(load_config(local_config))
    ids = [r["tm_id"] for r in backend.transfers_to_kill()]
    backend.mark_killed(ids)
    retried = run(local_config, "retry", "--task", "task_a")
    assert retried.exit_code == 0 and "4 transfers back to NEW" in retried.output


def test_bad_input_exit_codes(local_config, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{**request(1), "source_lfn": "no/slash"}]))
    result = run(local_config, "inject", str(bad))
    assert result.exit_code == 2
    assert "[0].source_lfn" in result.output
    notjson = tmp_path / "x.json"
    notjson.write_text("[{")
    assert run(local_config, "inject", str(notjson)).exit_code == 2
    assert run(local_config, "kill").exit_code == 2
    assert run(local_config, "kill", "--task", "t", "--ids", "a").exit_code == 2


def test_cli_over_rest_as_user_and_operator(tmp_path):
    service, url = start_state_server(tmp_path)
    try:
        def config(token):
            path = tmp_path / f"{token}.toml"
            path.write_text(f'[aso]\ninstance = "test"\n[state]\nurl = "{url}"\ntoken = "{token}"\nretries = 1\n')
            return str(path)

        reqs = tmp_path / "req.json"
        reqs.write_text(json.dumps([request(i) for i in range(3)]))
        out = subprocess.run(aso_command("--config", config("alice-token"), "inject", str(reqs), "--json"), capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        out = subprocess.run(aso_command("--config", config("bob-token"), "status", "--json"), capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and json.loads(out.stdout) == []  # bob sees none of alice's rows
        out = subprocess.run(aso_command("--config", config("bob-token"), "retry", "--task", "task_a"), capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and "may not call" in out.stderr  # a role refused: configuration (token)
        out = subprocess.run(aso_command("--config", config("operator-token"), "status", "--json"), capture_output=True, text=True, timeout=60)
        assert sum(r["count"] for r in json.loads(out.stdout)) == 3
    finally:
        service.stop()
    out = subprocess.run(aso_command("--config", str(tmp_path / "operator-token.toml"), "status"), capture_output=True, text=True, timeout=60)
    assert out.returncode == 3 and "unreachable" in out.stderr
