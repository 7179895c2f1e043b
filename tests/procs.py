"""Starting real services (aso server, aso fts-server, daemons) for tests, on loopback ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


class Service:
    """A child process listening on a port; its output goes to ``log``."""

    def __init__(self, args: list[str], port: int, log: Path, env: dict | None = None, cwd: str | None = None):
        self.args = args
        self.port = port
        self.log = log
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> Service:
        self._logfile = open(self.log, "ab")  # noqa: SIM115 - lives as long as the child
        self.proc = subprocess.Popen(
            self.args, stdout=self._logfile, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd,
            start_new_session=True,
        )
        try:
            wait_for_port(self.port, timeout=timeout, proc=self.proc)
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"{self.args} did not start: {exc}\n{self.log.read_text()[-4000:]}") from exc
        return self

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill9()
        if getattr(self, "_logfile", None):
            self._logfile.close()

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def aso_command(*args: str) -> list[str]:
    """The aso CLI as a child process, with this interpreter."""
    return [sys.executable, "-m", "aso.cli", *args]
