"""``aso publisher --json`` and ``aso catalog list`` through the real CLI."""

from __future__ import annotations

import json
import subprocess

from click.testing import CliRunner

from aso.cli import cli
from aso.locking import component_lock
from aso.state import open_backend
from tests.procs import aso_command
from tests.publisher.conftest import WORKER
from tests.publisher.helpers import DATASET, add_files


def _config(tmp_path, state_url: str | None = None, extra: str = ""):
    state_url = state_url or f"sqlite:///{tmp_path / 'state.db'}"
    path = tmp_path / "aso.toml"
    path.write_text(
        f'[aso]\nworker = "{WORKER}"\nlock_dir = "{tmp_path / "locks"}"\n'
        f'[state]\nurl = "{state_url}"\n'
        f'[publisher]\ncatalog_url = "sqlite:///{tmp_path / "catalog.db"}"\nmax_files_per_block = 4\n{extra}'
    )
    return path


def test_publisher_json_then_catalog_list(tmp_path):
    backend = open_backend(f"sqlite:///{tmp_path / 'state.db'}", worker=WORKER)
    lfns = add_files(backend, "task_cli", 10)
    backend.close()
    config = _config(tmp_path)
    done = subprocess.run(aso_command("--config", str(config), "publisher", "--json"), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["acquired"], summary["blocks"], summary["published"], summary["waiting"]) == (10, 2, 8, 2)

    runner = CliRunner()
    listed = runner.invoke(cli, ["--config", str(config), "catalog", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    data = json.loads(listed.output)
    assert [d["dataset"] for d in data] == [DATASET]
    assert sorted(f["lfn"] for b in data[0]["blocks"] for f in b["files"]) == sorted(lfns[:8])

    table = runner.invoke(cli, ["--config", str(config), "catalog", "list"])
    assert table.exit_code == 0 and "1 datasets, 2 blocks, 8 files" in table.output

    other = runner.invoke(cli, ["--config", str(config), "catalog", "list", "--dataset", "/No/such-v1/USER", "--json"])
    assert other.exit_code == 0 and json.loads(other.output) == []


def test_publisher_lock_held_does_nothing(tmp_path):
    backend = open_backend(f"sqlite:///{tmp_path / 'state.db'}", worker=WORKER)
    add_files(backend, "task_lock", 4)
    config = _config(tmp_path)
    with component_lock(tmp_path / "locks", "publisher"):
        done = subprocess.run(aso_command("--config", str(config), "publisher", "--json"), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert "holds" in done.stderr
    assert {r["tm_publication_state"] for r in backend.list_transfers(task="task_lock")} == {"NEW"}
    backend.close()


def test_publisher_over_rest_cli(tmp_path):
    from tests.state.servers import start_state_server

    service, url = start_state_server(tmp_path)
    try:
        backend = open_backend(url, worker=WORKER, token="service-token", instance="test")
        add_files(backend, "task_rest", 5, task_status="COMPLETED")
        config = _config(tmp_path, url, extra="")
        text = config.read_text().replace("[state]\n", '[state]\ntoken = "service-token"\n').replace('[aso]\n', '[aso]\ninstance = "test"\n')
        config.write_text(text)
        done = subprocess.run(aso_command("--config", str(config), "publisher"), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "5 published" in done.stdout
        assert {r["tm_publication_state"] for r in backend.list_transfers(task="task_rest")} == {"DONE"}
        backend.close()
    finally:
        service.stop()


def test_bad_catalog_kind_is_exit_2(tmp_path):
    config = _config(tmp_path, extra='catalog = "nosuch"\n')
    result = CliRunner().invoke(cli, ["--config", str(config), "catalog", "list"])
    assert result.exit_code == 2


def test_dbs_catalog_from_config_uses_service_certificate(tmp_path):
    from aso.catalogs import catalog_from_config
    from aso.catalogs.dbs import DbsCatalog
    from aso.config import load_config

    (tmp_path / "cert.pem").write_text("x")
    (tmp_path / "key.pem").write_text("x")
    path = tmp_path / "dbs.toml"
    path.write_text(
        '[publisher]\ncatalog = "dbs"\ncatalog_url = "https://dbs.example.org/dbs/prod/phys03/DBSWriter"\n'
        f'[credentials]\nservice_cert = "{tmp_path / "cert.pem"}"\nservice_key = "{tmp_path / "key.pem"}"\n'
    )
    catalog = catalog_from_config(load_config(str(path)))
    assert isinstance(catalog, DbsCatalog)
    assert catalog.session.cert == (str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    assert catalog.reader == "https://dbs.example.org/dbs/prod/phys03/DBSReader"
    catalog.close()


def test_publisher_loop_runs_passes_until_interrupted(tmp_path):
    import signal
    import time

    backend = open_backend(f"sqlite:///{tmp_path / 'state.db'}", worker=WORKER)
    add_files(backend, "task_loop", 4, task_status="COMPLETED")
    config = _config(tmp_path)
    proc = subprocess.Popen(
        aso_command("--config", str(config), "publisher", "--loop", "--interval", "0.2"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and {r["tm_publication_state"] for r in backend.list_transfers(task="task_loop")} != {"DONE"}:
        time.sleep(0.1)
    time.sleep(0.6)  # a few more (empty) passes
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = [x for x in out.splitlines() if x.startswith("publisher:")]
    assert len(lines) >= 2
    assert "4 published" in lines[0] and "0 published" in lines[-1]
    backend.close()
