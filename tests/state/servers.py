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


def start_gunicorn_server(folder: Path, db_url: str, workers: int = 3, max_batch: int = 10000) -> tuple[Service, str]:
    """``aso server`` as the large deployment runs it: under gunicorn with ``workers``
    processes on ``db_url`` (PostgreSQL), the same tokens as :func:`start_state_server`.
    Returns the started service and its base URL."""
    import shutil

    gunicorn = shutil.which("gunicorn")
    if gunicorn is None:
        raise RuntimeError("gunicorn is not installed (it is part of the 'server' extra)")
    config = write_server_config(folder, db_url)
    config.write_text(config.read_text().replace("max_batch = 20000", f"max_batch = {max_batch}"))
    port = free_port()
    service = Service([gunicorn, "-w", str(workers), "-b", f"127.0.0.1:{port}", "aso.state.server:app_from_env()"],
                      port, folder / "gunicorn.log", env={"ASO_CONFIG": str(config)}).start()
    return service, f"http://127.0.0.1:{port}"
