"""A real ``aso fts-server`` process in plain-HTTP mode, and a small client for the tests."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from tests.procs import Service, aso_command, free_port

TERMINAL = {"FINISHED", "FINISHEDDIRTY", "FAILED", "CANCELED"}


class PlainFts:
    """``roots``: the folders file:// URLs may use (``--root``); default: the folder above
    ``folder`` (a test's tmp_path when ``folder`` is tmp_path / "fts")."""

    def __init__(self, folder: Path, *extra: str, roots: list[Path] | None = None):
        self.folder = folder
        self.roots = [folder.parent] if roots is None else list(roots)
        folder.mkdir(parents=True, exist_ok=True)
        self.db = folder / "fts.db"
        self.log = folder / "fts-server.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = aso_command("fts-server", "--host", "127.0.0.1", "--port", str(self.port), "--db", str(self.db),
                                "--poll-seconds", "0.2", "--checkpoint-seconds", "0.2",
                                *[a for r in self.roots for a in ("--root", str(r))], *extra)
        self.service = Service(self.args, self.port, self.log, cwd=str(folder))
        self.http = requests.Session()

    def start(self) -> PlainFts:
        self.service = Service(self.args, self.port, self.log, cwd=str(self.folder))
        self.service.start()
        return self

    def stop(self) -> None:
        self.service.stop()

    def kill9(self) -> None:
        self.service.kill9()

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        return self.http.request(method, self.url + path, timeout=30, **kwargs)

    def submit(self, files: list[dict], **params) -> str:
        resp = self.request("POST", "/jobs", json={"files": files, "params": params})
        assert resp.status_code == 200, resp.text
        return resp.json()["job_id"]

    def job(self, job_id: str) -> dict:
        resp = self.request("GET", f"/jobs/{job_id}")
        assert resp.status_code == 200, resp.text
        return resp.json()

    def files(self, job_id: str) -> list[dict]:
        resp = self.request("GET", f"/jobs/{job_id}/files")
        assert resp.status_code == 200, resp.text
        return resp.json()

    def wait(self, job_id: str, states=TERMINAL, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["job_state"] in states:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job['job_state']} after {timeout}s\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)

    def wait_files(self, job_id: str, predicate, timeout: float = 30) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            files = self.files(job_id)
            if predicate(files):
                return files
            if time.monotonic() > deadline:
                raise AssertionError(f"files of {job_id} never matched: {files}\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)


@contextlib.contextmanager
def plain_fts(folder: Path, *extra: str, roots: list[Path] | None = None) -> Iterator[PlainFts]:
    fts = PlainFts(folder, *extra, roots=roots).start()
    try:
        yield fts
    finally:
        fts.stop()


def transfer(source: str, destination: str, **extra) -> dict:
    return {"sources": [source], "destinations": [destination], **extra}
