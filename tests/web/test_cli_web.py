"""``aso web``: the status page alone over a local database, as an operator runs it."""

from __future__ import annotations

import subprocess

import requests

from aso.state import open_backend
from tests.procs import Service, aso_command, free_port
from tests.web.data import populate, totals


def _config(tmp_path, extra: str = "") -> str:
    path = tmp_path / "aso.toml"
    path.write_text(f'[state]\nurl = "sqlite:///{tmp_path / "state.db"}"\n{extra}\n')
    return str(path)


def test_without_tokens_it_serves_loopback_with_no_login(tmp_path):
    config = _config(tmp_path)
    backend = open_backend(f"sqlite:///{tmp_path / 'state.db'}", worker="worker-a")
    populate(backend)
    backend.close()
    port = free_port()
    with Service(aso_command("--config", config, "web", "--port", str(port)), port, tmp_path / "web.log"):
        page = requests.get(f"http://127.0.0.1:{port}/", timeout=10, allow_redirects=False)
        assert page.status_code == 200 and 'id="health"' in page.text and "local" in page.text
        assert f'data-state="DONE">{totals()["DONE"]}<' in page.text
        assert "Log out" not in page.text
        assert requests.get(f"http://127.0.0.1:{port}/task/bob_task_1", timeout=10).status_code == 200
        assert requests.get(f"http://127.0.0.1:{port}/task/x?page=zero", timeout=10).status_code == 400
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json() == {"status": "ok"}
        # a site that points its own name at 127.0.0.1 (DNS rebinding) reads nothing
        rebound = requests.get(f"http://127.0.0.1:{port}/", headers={"Host": f"evil.example:{port}"}, timeout=10)
        assert rebound.status_code == 403 and "DONE" not in rebound.text
        assert requests.get(f"http://127.0.0.1:{port}/", headers={"Host": f"localhost:{port}"}, timeout=10).ok


def test_with_tokens_it_asks_for_a_login(tmp_path):
    config = _config(tmp_path, '[server]\ntokens = [{token = "alice-token", identity = "alice", role = "user"}]')
    port = free_port()
    with Service(aso_command("--config", config, "web", "--port", str(port)), port, tmp_path / "web.log"):
        page = requests.get(f"http://127.0.0.1:{port}/", timeout=10, allow_redirects=False)
        assert page.status_code == 303 and page.headers["Location"] == "/login"


def test_it_refuses_other_addresses_without_tokens_and_a_rest_state_url(tmp_path):
    out = subprocess.run(aso_command("--config", _config(tmp_path), "web", "--host", "0.0.0.0", "--port", "0"),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "web.host" in out.stderr and "loopback" in out.stderr
    rest = tmp_path / "rest.toml"
    rest.write_text('[state]\nurl = "https://state.example:8443"\n')
    out = subprocess.run(aso_command("--config", str(rest), "web"), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "state.url" in out.stderr and "root URL" in out.stderr
    proxied = tmp_path / "proxied.toml"
    proxied.write_text(f'[state]\nurl = "sqlite:///{tmp_path / "state.db"}"\n[web]\nbehind_proxy = true\n')
    out = subprocess.run(aso_command("--config", str(proxied), "web", "--port", "0"), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and "web.behind_proxy" in out.stderr
