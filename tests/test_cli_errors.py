"""Every ``aso`` command against each failure class: the README's exit code (2 bad input or
configuration, 3 a backend unreachable, 1 failed) and exactly one line on stderr, never a
traceback.

The commands come from the click group, so a new command is covered without touching this
file; a command is skipped for a class only where the class makes no sense, with the reason.
Commands that could start serving run as child processes (a regression would hang, not
fail); the others run in-process where that is enough (click >= 8.2 keeps stderr apart).

The backend-down and FTS-down runs use ``--log-level ERROR``: the INFO/WARNING lines are the
operator's log, not the error. A component may still log the failure it met at ERROR (the
reporter does, per user): such log records, each one line with its timestamp, are allowed
there; everything else on stderr must be the one error line.
"""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import subprocess
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from aso.cli import COMMANDS, cli
from aso.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_UNAVAILABLE, as_cli_error
from tests.ftsd.fts import PlainFts
from tests.pipeline.harness import LINKS, Installation
from tests.procs import aso_command, free_port
from tests.state.test_contract import request


def _leaves(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    ctx = click.Context(group)
    out = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            out += _leaves(command, (*prefix, name))
        else:
            out.append((*prefix, name))
    return out


COMMAND_PATHS = _leaves(cli)
IDS = [" ".join(p) for p in COMMAND_PATHS]

#: commands that serve until stopped: always child processes, with a timeout
SERVERS = {("server",), ("fts-server",), ("web",)}
#: the components that talk to FTS
FTS_CLIENTS = {("transfer",), ("monitor",), ("retry-manager",)}

NO_CONFIG = {
    ("init",): "writes a configuration and reads none (--config does not apply)",
    ("config-reference",): "prints the option table from the code and reads no configuration",
    ("demo",): "builds its own throwaway installation and reads no configuration",
}
NO_STATE_BACKEND = {
    **NO_CONFIG,
    ("server",): "is the state backend (it serves a database; its failures are bad config and port in use)",
    ("fts-server",): "is the FTS service and talks to no state backend",
    ("web",): "reads a database, never an aso server: an http(s) state.url is bad configuration "
              "(exit 2, tests/web/test_cli_web.py)",
    ("archive",): "works on a database, never through an aso server: an http(s) state.url is bad configuration "
                  "(exit 2), an unreachable database exit 3 (tests/state/test_archive.py)",
    ("monitor",): "polls FTS whether or not the state backend answers: its heartbeat and its look for "
                  "jobs taken over from other hosts are best effort (docs/hosts.md)",
    ("receiver",): "turns broker messages into sandbox hand-offs, never talks to the state backend",
    ("catalog", "list"): "reads the catalog, not the state backend",
    ("topology",): "reads the configuration's sites and links, never the state backend",
    ("topology", "path"): "reads the configuration's sites and links, never the state backend",
}


@pytest.fixture(autouse=True)
def _restore_logging():
    """In-process runs may install aso's log handler on the runner's stream: take it away."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    if hasattr(root, "_aso_configured"):
        del root._aso_configured


#: a log record of the plain (non-terminal) handler: "2024-01-01 12:00:00,123 ERROR aso.x: ..."
LOG_RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (ERROR|CRITICAL) aso[.\w]*: ")


def assert_one_error_line(code: int, stderr: str, expected: int, what: str, log_records: bool = False) -> str:
    lines = stderr.splitlines()
    if log_records:
        lines = [line for line in lines if not LOG_RECORD.match(line)]
    assert code == expected, f"{what}: exit {code}, expected {expected}; stderr:\n{stderr}"
    assert "Traceback" not in stderr, f"{what}:\n{stderr}"
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0][7:].strip(), f"{what}: stderr is not one error line:\n{stderr}"
    return lines[0]


def run_child(*args: str, timeout: float = 60, cwd: Path | None = None) -> tuple[int, str, str]:
    res = subprocess.run(aso_command(*args), capture_output=True, text=True, timeout=timeout, cwd=cwd)
    return res.returncode, res.stdout, res.stderr


def run_in_process(*args: str, input: bytes | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), input=input, prog_name="aso")
    return result.exit_code, result.stdout, result.stderr


def run(path: tuple[str, ...], *args: str) -> tuple[int, str, str]:
    return run_child(*args) if path in SERVERS else run_in_process(*args)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A request file that is valid, a task name, and folders, for arguments that must not be
    what fails."""
    root = tmp_path_factory.mktemp("cli-errors-files")
    requests = root / "requests.json"
    requests.write_text(json.dumps([request(1)]))
    return {"root": root, "requests": requests}


def valid_args(path: tuple[str, ...], files: dict[str, Path], task: str = "task_a") -> list[str]:
    """Arguments with which ``path`` would do its work, so only the class under test fails."""
    root = files["root"]
    table = {
        ("inject",): [str(files["requests"])],
        ("kill",): ["--task", task],
        ("retry",): ["--task", task],
        ("server",): ["--host", "127.0.0.1", "--port", str(free_port())],
        ("web",): ["--host", "127.0.0.1", "--port", str(free_port())],
        ("fts-server",): ["--host", "127.0.0.1", "--port", str(free_port()), "--db", str(root / "fts.db")],
        ("init",): [str(root / f"init-{time.monotonic_ns()}")],
        ("demo",): ["--files", "1", "--users", "1", "--timeout", "60"],
        ("topology", "path"): ["T2_XX_Source", "T2_YY_Dest"],
    }
    return table.get(path, [])


def test_the_command_list_is_complete():
    assert {p[0] for p in COMMAND_PATHS} == set(COMMANDS)
    assert ("catalog", "list") in COMMAND_PATHS
    assert set(COMMAND_PATHS) >= FTS_CLIENTS | SERVERS


# -- bad input --------------------------------------------------------------------------

@pytest.mark.parametrize("path", COMMAND_PATHS, ids=IDS)
def test_bad_option_is_one_line_exit_2(path, files):
    code, _, stderr = run(path, *path, *valid_args(path, files), "--no-such-option")
    line = assert_one_error_line(code, stderr, EXIT_BAD_INPUT, " ".join(path))
    assert "--no-such-option" in line and f"aso {' '.join(path)}" in line


def _request_files(root: Path) -> dict[str, bytes]:
    ok = request(2)
    return {
        "not JSON": b"[{",
        "not UTF-8": b'[{"username": "\xff"}]',
        "lone surrogate in a value": json.dumps([{**ok, "job_id": "\ud800"}]).encode(),
        "lone surrogate in a key": json.dumps([{**ok, "\ud800": 1}]).encode(),
        "100k-deep JSON": b"[" * 100_000 + b"]" * 100_000,
        "integer >= 2**63": json.dumps([{**ok, "filesize": 2**64}]).encode(),
        "integer >= 2**63 elsewhere": json.dumps([{**ok, "job_retry_count": 2**70}]).encode(),
        "not a list of objects": b"[1]",
    }


@pytest.fixture(scope="module")
def local_config(tmp_path_factory) -> str:
    from aso.installation import init_installation

    return str(init_installation(tmp_path_factory.mktemp("cli-errors-local") / "inst"))


@pytest.mark.parametrize("case", list(_request_files(Path("."))))
def test_inject_bad_file_is_one_line_exit_2(case, local_config, tmp_path):
    body = _request_files(tmp_path)[case]
    path = tmp_path / "req.json"
    path.write_bytes(body)
    code, _, stderr = run_in_process("--config", local_config, "inject", str(path))
    assert_one_error_line(code, stderr, EXIT_BAD_INPUT, case)
    code, _, stderr = run_in_process("--config", local_config, "inject", "-", input=body)  # stdin alike
    assert_one_error_line(code, stderr, EXIT_BAD_INPUT, f"{case} on stdin")
    from aso.config import load_config
    from aso.state import backend_from_config

    backend = backend_from_config(load_config(local_config))
    try:
        assert backend.list_transfers() == []  # nothing written
    finally:
        backend.close()


def test_kill_and_retry_need_one_of_task_or_ids(local_config):
    for args in (["kill"], ["retry", "--task", "t", "--ids", "a"]):
        code, _, stderr = run_in_process("--config", local_config, *args)
        assert_one_error_line(code, stderr, EXIT_BAD_INPUT, " ".join(args))


def test_bad_log_level_option_is_exit_2(local_config):
    code, _, stderr = run_in_process("--config", local_config, "--log-level", "LOUD", "status")
    assert_one_error_line(code, stderr, EXIT_BAD_INPUT, "--log-level LOUD")


# -- bad configuration ------------------------------------------------------------------

BAD_CONFIGS = {
    "bad TOML": b"[state\n",
    "unknown option": b"[transfer]\nbogus = 1\n",
    "wrong type": b'[transfer]\nthreads = "many"\n',
    "not UTF-8": b'[aso]\nworker = "\xff"\n',
    "log level": b'[aso]\nlog_level = "LOUD"\n',
    "state.url not a URL": b'[state]\nurl = "not-a-url"\n',
    "state.url mysql": b'[state]\nurl = "mysql://aso@db/aso"\n',
    "state.url ftp": b'[state]\nurl = "ftp://example.org/state"\n',
    "max_files_per_job 0": b"[transfer]\nmax_files_per_job = 0\n",
}


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=IDS)
def test_bad_configuration_is_one_line_exit_2(path, files, tmp_path):
    if path in NO_CONFIG:
        pytest.skip(f"aso {' '.join(path)} {NO_CONFIG[path]}")
    # every command with the three classic mistakes; the others on one command each, below
    for name in ("bad TOML", "unknown option", "wrong type"):
        config = tmp_path / f"{name.replace(' ', '-')}.toml"
        config.write_bytes(BAD_CONFIGS[name])
        code, _, stderr = run(path, "--config", str(config), *path, *valid_args(path, files))
        line = assert_one_error_line(code, stderr, EXIT_BAD_INPUT, f"aso {' '.join(path)} with {name}")
        assert str(config.name) in line or "transfer." in line


@pytest.mark.parametrize("name", list(BAD_CONFIGS))
def test_each_configuration_mistake_is_one_line_exit_2(name, files, tmp_path):
    config = tmp_path / "aso.toml"
    config.write_bytes(BAD_CONFIGS[name])
    # transfer: max_files_per_job = 0 used to fail only after rows were acquired
    for path in (("status",), ("transfer",)):
        code, _, stderr = run_in_process("--config", str(config), *path)
        assert_one_error_line(code, stderr, EXIT_BAD_INPUT, f"aso {path[0]} with {name}")


# -- a state backend that is down -------------------------------------------------------

@pytest.fixture(scope="module")
def site(pki, tmp_path_factory):
    """An installation (``aso init``) against a real plain-HTTP ``aso fts-server``, with rows
    in every state that makes the FTS clients call FTS: task a's job finished and handed to
    the reporter, task b's job submitted then killed (monitor entry, KILL rows with an FTS
    id), task c NEW. FTS is stopped before the tests run."""
    root = tmp_path_factory.mktemp("cli-errors-site")
    fts = PlainFts(root / "fts")
    fts.start()
    try:
        inst = Installation(root / "aso", fts.url, "state.retries=1", "state.backoff=0.01", "fts.timeout=5.0")
        inst.add_proxy("alice", pki.alice.proxy_path)
        tasks = {}
        for name in ("a", "b", "c"):
            requests = inst.make_requests(["alice"], 2, links=LINKS[:1], task_prefix=name)
            tasks[name] = requests[0]["taskname"]
            inst.inject(requests)
            if name == "a":
                inst.aso("transfer")
                deadline = time.monotonic() + 30
                while inst.sandbox_entries()["reporter"] == 0:
                    assert time.monotonic() < deadline, "task a never finished in FTS"
                    time.sleep(0.2)
                    inst.aso("monitor")
            elif name == "b":
                inst.aso("transfer")
                inst.aso("kill", "--task", tasks["b"])
        fts.stop()
        states = {}
        for row in inst.rows():
            states.setdefault(row["tm_taskname"], set()).add(row["tm_transfer_state"])
        assert states == {tasks["a"]: {"SUBMITTED"}, tasks["b"]: {"KILL"}, tasks["c"]: {"NEW"}}, states
        entries = inst.sandbox_entries()
        assert entries["reporter"] >= 1 and entries["monitor"] >= 1, entries
        inst.tasks = tasks
        inst.fts_url = fts.url
        yield inst
    finally:
        fts.stop()


@pytest.fixture(scope="module")
def down_config(site) -> Path:
    """The site's configuration with the state backend on a closed loopback port."""
    text, count = re.subn(r'(?m)^url = ".*"$', f'url = "http://127.0.0.1:{free_port()}"', site.config_path.read_text())
    assert count == 1
    down = site.config_path.with_name("down.toml")
    down.write_text(text)
    return down


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=IDS)
def test_state_backend_down_is_one_line_exit_3(path, site, down_config, files):
    if path in NO_STATE_BACKEND:
        pytest.skip(f"aso {' '.join(path)} {NO_STATE_BACKEND[path]}")
    code, _, stderr = run_child("--config", str(down_config), "--log-level", "ERROR", *path,
                                *valid_args(path, files, task=site.tasks["a"]), timeout=60, cwd=site.root)
    line = assert_one_error_line(code, stderr, EXIT_UNAVAILABLE, f"aso {' '.join(path)} with the backend down", log_records=True)
    assert "unreachable" in line


# -- FTS down ---------------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted(FTS_CLIENTS), ids=[p[0] for p in sorted(FTS_CLIENTS)])
def test_fts_down_is_one_line_exit_3(path, site):
    code, _, stderr = run_child("--config", str(site.config_path), "--log-level", "ERROR", *path,
                                timeout=90, cwd=site.root)
    line = assert_one_error_line(code, stderr, EXIT_UNAVAILABLE, f"aso {path[0]} with FTS down", log_records=True)
    assert f"unreachable: FTS {site.fts_url}" in line


# -- servers: a port already in use -----------------------------------------------------

@pytest.mark.parametrize("path", sorted(SERVERS), ids=[p[0] for p in sorted(SERVERS)])
def test_port_in_use_is_one_line_exit_2(path, tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "aso.toml"
        config.write_text(f'[server]\ndb_url = "sqlite:///{tmp_path / "state.db"}"\n'
                          'tokens = [{token = "a-long-token", identity = "aso", role = "service"}]\n')
        args = ["--host", "127.0.0.1", "--port", str(port)]
        if path == ("fts-server",):
            args += ["--db", str(tmp_path / "fts.db")]
        code, _, stderr = run_child("--config", str(config), *path, *args, timeout=60)
    line = assert_one_error_line(code, stderr, EXIT_BAD_INPUT, f"aso {path[0]} on a port in use")
    assert f"127.0.0.1:{port}" in line and "in use" in line


# -- the state server refusing us -------------------------------------------------------

def test_a_token_the_state_server_refuses_is_exit_2(tmp_path):
    from tests.state.servers import start_state_server

    service, url = start_state_server(tmp_path)
    try:
        config = tmp_path / "client.toml"
        config.write_text(f'[aso]\ninstance = "test"\n[state]\nurl = "{url}"\ntoken = "wrong-token"\nretries = 1\n')
        code, _, stderr = run_child("--config", str(config), "status")
        line = assert_one_error_line(code, stderr, EXIT_BAD_INPUT, "a wrong token (401)")
        assert "bearer token" in line
    finally:
        service.stop()


# -- the message itself -----------------------------------------------------------------

def test_unreachable_with_150_ids_is_one_short_line():
    from aso.errors import BackendUnavailable
    from aso.state.rest_client import RestBackend

    backend = RestBackend(f"http://127.0.0.1:{free_port()}", worker="w", retries=1)
    ids = [f"{i:056x}" for i in range(150)]
    with pytest.raises(Exception) as caught:
        backend.get_transfers(ids)  # the ids travel in the body: none reaches the message
    # ...but a message may still carry a long list (a server's answer, a URL): summarised
    for exc in (caught.value, BackendUnavailable("state server x unreachable: GET /x?" + "&".join(f"id={i}" for i in ids))):
        error = as_cli_error(exc)
        assert error.exit_code == EXIT_UNAVAILABLE
        out = io.StringIO()
        error.show(out)
        text = out.getvalue()
        assert text.count("\n") == 1 and ids[5] not in text and len(text) < 600, text
    assert "[150 ids]" in text


def test_unexpected_exception_is_an_internal_error_line():
    error = as_cli_error(RuntimeError("boom\nsecond line"))
    assert error.exit_code == EXIT_FAILED
    assert error.format_message() == "internal error: RuntimeError: boom second line (run with --log-level DEBUG / see log)"


def test_a_command_module_that_fails_to_import_is_an_error(monkeypatch):
    monkeypatch.setitem(COMMANDS, "broken", "no_such_cmds:broken")
    code, _, stderr = run_in_process("broken")
    line = assert_one_error_line(code, stderr, EXIT_FAILED, "aso broken")
    assert "internal error: command 'aso broken' cannot be loaded: ModuleNotFoundError" in line
    code, _, stderr = run_in_process("--help")  # not silently left out of the list
    assert_one_error_line(code, stderr, EXIT_FAILED, "aso --help with a broken command")
    code, _, stderr = run_in_process("--log-level", "DEBUG", "broken")  # the traceback at DEBUG only
    assert code == EXIT_FAILED and "Traceback" in stderr
    assert stderr.splitlines()[-1].startswith("error: internal error: command 'aso broken'")
