"""Several ASO hosts on one machine, as the multi-host deployment runs them: each an
installation of its own (config, ``[aso] worker`` name, sandbox, locks) whose components all
run with ``--loop`` as child processes of one process group, so a host can be killed whole
(SIGKILL to the group) the way a machine dies, and started again from the same config.
Used by tests/pipeline/test_three_hosts.py."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tests.pipeline.harness import Installation
from tests.procs import aso_command

#: every component of a file's way that does not need a tape site (no ``aso stager``)
COMPONENTS = ("transfer", "monitor", "reporter", "publisher", "retry-manager")


class Host:
    """One installation's components looping as real processes (one process group)."""

    def __init__(self, installation: Installation, name: str, interval: float = 0.5):
        self.installation = installation
        self.name = name
        self.interval = interval
        self.procs: list[subprocess.Popen] = []
        self.starts = 0
        #: stopped or killed on purpose: its components' ends are no failure
        self.down = True

    @property
    def sandbox(self) -> Path:
        return Path(self.installation.config.sandbox.root)

    def start(self) -> Host:
        assert not self.running(), f"{self.name} is running already"
        self.starts += 1
        self.procs = []
        self.down = False
        config = str(self.installation.config_path)
        pgid = 0  # the first child leads a new group; the others join it
        for component in COMPONENTS:
            log = open(self.installation.root / f"{component}-{self.starts}.log", "ab")  # noqa: SIM115 - closed by the child's exit
            proc = subprocess.Popen(
                aso_command("--config", config, component, "--loop", "--interval", str(self.interval)),
                stdout=log, stderr=subprocess.STDOUT, cwd=self.installation.root, process_group=pgid,
            )
            log.close()
            self.procs.append(proc)
            pgid = pgid or proc.pid
        return self

    def running(self) -> bool:
        return any(p.poll() is None for p in self.procs)

    def exited(self) -> dict[str, int]:
        """Components that ended on their own (a looping component never should), with their code."""
        if self.down:
            return {}
        return {c: p.returncode for c, p in zip(COMPONENTS, self.procs, strict=False) if p.poll() is not None}

    def kill9(self) -> None:
        """The machine dies: every component at once, wherever it is."""
        self.down = True
        self._signal(signal.SIGKILL)
        for p in self.procs:
            p.wait(timeout=10)

    def stop(self) -> None:
        """Orderly stop (SIGTERM ends a loop after its pass), SIGKILL for whatever lingers."""
        stop_all([self])

    def _wait_stopped(self) -> None:
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill9()
                return

    def _signal(self, sig: int) -> None:
        if self.procs and self.running():
            with contextlib.suppress(ProcessLookupError):  # every member gone since running() looked
                os.killpg(self.procs[0].pid, sig)

    def logs(self, tail: int = 3000) -> str:
        out = []
        for component in COMPONENTS:
            for path in sorted(self.installation.root.glob(f"{component}-*.log")):
                out.append(f"--- {self.name} {path.name}\n{path.read_text(errors='replace')[-tail:]}")
        return "\n".join(out)


def stop_all(hosts: list[Host]) -> None:
    """Stop every host at once (each waits for its passes to end: in parallel, not in turn)."""
    for host in hosts:
        host.down = True
        host._signal(signal.SIGTERM)
    for host in hosts:
        host._wait_stopped()


def wait_until(what: str, predicate: Callable[[], object], timeout: float, hosts: list[Host], pause: float = 0.3) -> object:
    """Poll ``predicate`` until it returns something true; fail after ``timeout`` seconds,
    or at once when a host's looping component has died, with the hosts' logs."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        dead = {h.name: h.exited() for h in hosts if h.procs and h.exited()}
        if dead or time.monotonic() > deadline:
            reason = f"components exited: {dead}" if dead else f"not after {timeout} s"
            raise AssertionError(f"{what}: {reason}\n" + "\n".join(h.logs() for h in hosts))
        time.sleep(pause)


def fts_files_by_source(fts_db: Path) -> Counter:
    """Source URL → how many FTS jobs copied it, read from the service's database: with
    deterministic job ids a resubmission lands in the job it already has, so more than
    ``1 + retries`` means a file was submitted twice."""
    conn = sqlite3.connect(fts_db)
    try:
        return Counter(src for src, in conn.execute("SELECT source_surl FROM (SELECT DISTINCT job_id, source_surl FROM t_file)"))
    finally:
        conn.close()


def published_lfns(catalog_url: str) -> Counter:
    """LFN → how many blocks of the catalog hold it."""
    from aso.catalogs.local import LocalCatalog

    catalog = LocalCatalog(catalog_url)
    try:
        return Counter(f["lfn"] for d in catalog.listing() for b in d["blocks"] for f in b["files"])
    finally:
        catalog.close()


def state_summary(rows: list[dict]) -> str:
    return json.dumps({
        "transfer": Counter(r["tm_transfer_state"] for r in rows),
        "publication": Counter(r["tm_publication_state"] for r in rows),
        "workers": Counter(str(r["tm_aso_worker"]) for r in rows),
    })
