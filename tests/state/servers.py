"""A real ``aso server`` process for tests."""

from __future__ import annotations

from pathlib import Path

from tests.procs import Service, aso_command, free_port

TOKENS = [
    {"token": "service-token", "identity": "aso-service", "role": "service"},
    {"token": "operator-token", "identity": "operator", "role": "operator"},
    {"token": "alice-token", "identity": "alice", "role": "user"},
    {"token": "bob-token", "identity": "bob", "role": "user"},
]


def write_server_config(tmp_path: Path, db_url: str | None = None, port: int | None = None, extra: str = "") -> Path:
    db_url = db_url or f"sqlite:///{tmp_path / 'state.db'}"
    lines = ["[aso]", 'instance = "test"', "[server]", f'db_url = "{db_url}"', "max_batch = 20000", "tokens = ["]
    lines += [f'  {{token = "{t["token"]}", identity = "{t["identity"]}", role = "{t["role"]}"}},' for t in TOKENS]
    lines += ["]", extra]
    path = tmp_path / "server.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def start_state_server(
    tmp_path: Path, db_url: str | None = None, port: int | None = None, extra: str = ""
) -> tuple[Service, str]:
    """Start ``aso server`` on a free loopback port; returns the service and its base URL.

    ``extra`` is appended to the [server] section (e.g. ``max_body_bytes = 2000``).
    """
    config = write_server_config(tmp_path, db_url, extra=extra)
    port = port or free_port()
    service = Service(
        aso_command("--config", str(config), "server", "--host", "127.0.0.1", "--port", str(port)),
        port,
        tmp_path / f"server-{port}.log",
    ).start()
    return service, f"http://127.0.0.1:{port}"
