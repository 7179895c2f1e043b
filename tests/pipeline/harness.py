"""An installation made with ``aso init``, driven with the ``aso`` command as an operator's
cron would drive it, against a real ``aso fts-server`` and (optionally) a real ``aso server``."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
import zlib
from pathlib import Path

from aso.config import load_config
from aso.sandbox import KINDS, Sandbox
from aso.state import backend_from_config
from tests.procs import aso_command

LINKS = (("T2_XX_Source", "T2_YY_Dest"), ("T2_XX_Source", "T2_ZZ_Dest"), ("T2_YY_Dest", "T2_ZZ_Dest"))


class Installation:
    def __init__(self, root: Path, fts_url: str, *settings: str, sites: dict | None = None):
        self.root = root
        args = ["init", str(root), "--fts", fts_url, "--set", "retry_manager.stuck_after=3600", *[a for s in settings for a in ("--set", s)]]
        res = subprocess.run(aso_command(*args), capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        self.config_path = root / "aso.toml"
        if sites:
            text = self.config_path.read_text()
            for name, prefix in sites.items():
                old = (root / "sites" / name).as_uri()
                text = text.replace(f'prefix = "{old}"', f'prefix = "{prefix}"')
            self.config_path.write_text(text)
        self.config = load_config(str(self.config_path))

    # -- driving it -------------------------------------------------------------------

    def aso(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        res = subprocess.run(aso_command("--config", str(self.config_path), *args), capture_output=True, text=True,
                             timeout=timeout, cwd=self.root)
        if check:
            assert res.returncode == 0, f"aso {' '.join(args)}: rc={res.returncode}\n{res.stdout}\n{res.stderr}"
        return res

    def add_proxy(self, user: str, proxy_path: Path) -> None:
        target = Path(self.config.credentials.directory) / f"{user}.pem"
        shutil.copyfile(proxy_path, target)
        target.chmod(0o600)

    def inject(self, requests: list[dict]) -> None:
        path = self.root / f"inject-{time.monotonic_ns()}.json"
        path.write_text(json.dumps(requests))
        self.aso("inject", str(path))

    def make_requests(self, users: list[str], files_per_user: int, links=LINKS, task_prefix: str = "task",
                      size: int = 2000, missing: int = 0) -> list[dict]:
        """Source files written at the source sites (except ``missing`` per user), and the
        transfer requests a post-job would inject for them, spread over ``links``."""
        requests = []
        for user in users:
            for i in range(files_per_user):
                src, dst = links[i % len(links)]
                lfn_tail = f"{user}/{task_prefix}/{i:05d}/out_{i}.root"
                data = os.urandom(size + i)
                src_lfn, dst_lfn = f"/store/temp/user/{lfn_tail}", f"/store/user/{lfn_tail}"
                if i >= missing:
                    path = self.local_path(src, src_lfn)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(data)
                requests.append({
                    "username": user, "taskname": f"221122_000000:{user}_{task_prefix}", "source": src,
                    "destination": dst, "source_lfn": src_lfn, "destination_lfn": dst_lfn, "filesize": len(data),
                    "checksum": f"{zlib.adler32(data):08x}", "publish": 0, "job_id": str(i), "job_retry_count": 0,
                    "type": "output",
                })
        return requests

    def use_multihop(self, hop_site: str, links: list[tuple[str, str]]) -> None:
        """Only ``links`` exist (no implied ones), and ``hop_site`` may be passed through:
        a pair without a link of its own goes over a multi-hop path."""
        text = self.config_path.read_text()
        text = text.replace(f"[sites.{hop_site}]\n", f"[sites.{hop_site}]\navailable_for_multihop = true\n")
        text = text.replace("[topology]\n", "[topology]\ndefault_distance = 0\n")
        text += "".join(f'\n[[links]]\nsource = "{a}"\ndestination = "{b}"\n' for a, b in links)
        self.config_path.write_text(text)
        self.config = load_config(str(self.config_path))

    def local_path(self, site: str, lfn: str) -> Path:
        prefix = self.config.site(site).prefix
        assert prefix.startswith("file://"), prefix
        return Path(prefix[len("file://"):]) / lfn.lstrip("/")

    def round(self, *components: str) -> None:
        for component in components or ("transfer", "monitor", "reporter"):
            self.aso(component)

    def rows(self) -> list[dict]:
        backend = backend_from_config(self.config)
        try:
            return backend.list_transfers(limit=100000)
        finally:
            backend.close()

    def states(self) -> dict[str, str]:
        return {r["tm_id"]: r["tm_transfer_state"] for r in self.rows()}

    def run_until(self, predicate, rounds: int = 40, components=("transfer", "monitor", "reporter"), pause: float = 0.2) -> None:
        for _ in range(rounds):
            self.round(*components)
            if predicate(self.rows()):
                return
            time.sleep(pause)
        rows = self.rows()
        reasons = sorted({f"{r['tm_transfer_state']}: {r['tm_transfer_failure_reason']}" for r in rows if r["tm_transfer_failure_reason"]})
        raise AssertionError(f"not reached after {rounds} rounds: {sorted({r['tm_transfer_state'] for r in rows})}; "
                             f"reasons: {reasons[:5]}")

    def sandbox_entries(self) -> dict[str, int]:
        root = Path(self.config.sandbox.root)
        return {kind: Sandbox(root, kind).count() for kind in KINDS}


def all_in(*states: str):
    return lambda rows: bool(rows) and all(r["tm_transfer_state"] in states for r in rows)


def fts_jobs_by_row(fts_db: Path) -> dict[str, list[str]]:
    """Row id → FTS jobs whose files carry it (read from the service's database); a
    multihop job, whose every hop carries the row id, counts once."""
    conn = sqlite3.connect(fts_db)
    try:
        out: dict[str, list[str]] = {}
        for job_id, metadata in conn.execute("SELECT DISTINCT job_id, file_metadata FROM t_file ORDER BY job_id"):
            row_id = json.loads(metadata).get("oracleId")
            jobs = out.setdefault(row_id, [])
            if job_id not in jobs:
                jobs.append(job_id)
        return out
    finally:
        conn.close()
