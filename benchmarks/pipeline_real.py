"""The pipeline with real bytes (``benchmarks/pipeline.py --real``): what a user sees.

    python benchmarks/pipeline.py --real                                  # the three cases, both verify modes
    python benchmarks/pipeline.py --real --case 10000x256K --verify both  # one of them

Per case (``COUNTxSIZE``: 10000x256K, 1000x4M, 5x1G) and checksum mode (``both``: the
requests carry each file's adler32 and FTS verifies source and destination; ``none``):

- **end to end**: files really written at the source site of an ``aso init`` installation,
  ``aso fts-server`` as its own process over HTTPS (its default workers and per-link limits),
  each user's proxy delegated by ``aso transfer``, and the components run as cron runs them
  (``aso transfer``, ``aso monitor``, ``aso reporter``, ``aso publisher``, ``aso
  retry-manager``: one process per pass, a round of them every ``--round-seconds``, cron's
  cadence compressed) until every row is DONE; timed from the first transfer pass;
- **service alone**: the same files copied by the same service to a fresh folder, submitted
  in jobs of 50 through aso's FTS3 tool (delegation done before the clock starts) and polled
  in bulk until every job is terminal;
- **cp + sync**: ``cp --reflink=never`` of the same files, then ``sync``.

Destinations are removed and ``sync`` run before each timing. The ratio columns say what the
orchestration costs on top of copying.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CASES = {"10000x256K": (10000, 256 * 1024), "1000x4M": (1000, 4 * 1024 * 1024), "5x1G": (5, 1024 ** 3)}
COMPONENTS = ("transfer", "monitor", "reporter", "publisher", "retry-manager")
SITES = ("T2_XX_Source", "T2_YY_Dest")


@dataclass
class CaseResult:
    case: str
    verify: str
    files: int
    nbytes: int
    end_to_end_s: float
    service_s: float
    cp_s: float
    rounds: int
    #: within the end-to-end run: first copy started to last copy finished, in the service
    fts_copy_s: float

    def as_dict(self) -> dict:
        mib = self.nbytes / 2**20
        return {
            "case": self.case, "verify": self.verify, "files": self.files, "MiB": round(mib),
            "end_to_end_s": round(self.end_to_end_s, 2), "end_to_end_files_s": round(self.files / self.end_to_end_s, 1),
            "end_to_end_MiB_s": round(mib / self.end_to_end_s, 1), "service_s": round(self.service_s, 2),
            "service_files_s": round(self.files / self.service_s, 1), "vs_service": round(self.service_s / self.end_to_end_s, 2),
            "cp_sync_s": round(self.cp_s, 2), "vs_cp": round(self.cp_s / self.end_to_end_s, 2), "rounds": self.rounds,
            "fts_copy_s": round(self.fts_copy_s, 2),
        }


def _write_files(paths: list[Path], size: int) -> list[str]:
    """Files of ``size`` bytes (a random block, a per-file prefix), and their adler32s."""
    block = os.urandom(min(size, 4 * 2**20))
    sums = []
    for n, path in enumerate(paths):
        path.parent.mkdir(parents=True, exist_ok=True)
        value = 1
        with open(path, "wb") as fh:
            head = f"{n:016d}".encode()
            value = zlib.adler32(head, value)
            fh.write(head)
            left = size - len(head)
            while left > 0:
                piece = block[:left]
                value = zlib.adler32(piece, value)
                fh.write(piece)
                left -= len(piece)
        sums.append(f"{value & 0xFFFFFFFF:08x}")
    return sums


def _aso(config: Path, *args: str, cwd: Path) -> dict:
    from tests.procs import aso_command

    res = subprocess.run(aso_command("--config", str(config), "--log-level", "WARNING", *args, "--json"),
                         capture_output=True, text=True, cwd=cwd)
    if res.returncode not in (0,):
        raise RuntimeError(f"aso {' '.join(args)} exited {res.returncode}: {res.stderr[-2000:]}")
    out = res.stdout.strip()
    return json.loads(out) if out else {}


def _clean(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    os.sync()


def _copy_window(db: Path) -> float:
    import sqlite3

    with sqlite3.connect(db) as conn:
        first, last = conn.execute("SELECT MIN(start_time), MAX(finish_time) FROM t_file").fetchone()
    return (last - first) if first and last else 0.0


def run_case(work: Path, case: str, verify: str, users: int, console, profile: Path | None = None,
             round_seconds: float = 3.0) -> CaseResult:
    from aso.transfertools import open_transfer_tool
    from aso.transfertools.base import JobOptions, Transfer
    from tests.pki import build_pki, fts_server_https
    from tests.procs import aso_command

    count, size = CASES[case]
    users = min(users, count)
    base = work / f"{case}-{verify}"
    _clean(base)
    base.mkdir(parents=True)
    pki = build_pki(base / "pki", users=())
    people = [pki.add_user(f"user{i:03d}") for i in range(users)]
    (base / "fts").mkdir()
    with fts_server_https(pki, base / "fts", roots=[base]) as fts:
        subprocess.run(aso_command("init", str(base / "aso"), "--fts", fts.url, "--set", f'fts.ca_dir="{fts.ca_dir}"',
                                   "--set", f'fts.verify_checksum="{verify}"', "--set", "transfer.acquire_limit=100000",
                                   "--set", "retry_manager.stuck_after=36000"), check=True, capture_output=True)
        config = base / "aso" / "aso.toml"
        for user in people:
            target = base / "aso" / "proxies" / f"{user.name}.pem"
            shutil.copyfile(user.proxy_path, target)
            target.chmod(0o600)
        src_root, dst_root = base / "aso" / "sites" / SITES[0], base / "aso" / "sites" / SITES[1]
        tails = [f"{people[i % users].name}/bench/{i // 1000:04d}/f{i:06d}.bin" for i in range(count)]
        console.print(f"  {case} {verify}: writing {count} files of {size} bytes …")
        sums = _write_files([src_root / "store/temp/user" / t for t in tails], size)
        requests = [{
            "username": people[i % users].name, "taskname": f"221122_000000:{people[i % users].name}_bench",
            "source": SITES[0], "destination": SITES[1], "source_lfn": f"/store/temp/user/{t}",
            "destination_lfn": f"/store/user/{t}", "filesize": size, "checksum": sums[i], "publish": 0,
            "job_id": str(i), "job_retry_count": 0, "type": "output"} for i, t in enumerate(tails)]
        (base / "inject.json").write_text(json.dumps(requests))
        _aso(config, "inject", str(base / "inject.json"), cwd=base)

        # end to end, the components as cron runs them
        os.sync()
        console.print(f"  {case} {verify}: end to end …")
        spy = None
        if profile:
            spy = subprocess.Popen(["py-spy", "record", "--format", "raw", "--rate", "100", "-o", str(profile),
                                    "--pid", str(fts.service.proc.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        start = time.perf_counter()
        done = rounds = 0
        while done < count:
            rounds += 1
            began = time.perf_counter()
            for component in COMPONENTS:
                out = _aso(config, component, cwd=base / "aso")
                if component == "reporter":
                    done += out.get("states", {}).get("DONE", 0)
            if done < count:
                # cron's cadence, compressed: a round at most every round_seconds (back to back,
                # the passes' own start-up would take the CPU the copies need on a small machine)
                time.sleep(max(0.0, round_seconds - (time.perf_counter() - began)))
            if rounds > 2000:
                raise RuntimeError(f"{case}: {done} of {count} DONE after {rounds} rounds")
        end_to_end = time.perf_counter() - start
        if spy is not None:
            spy.send_signal(2)
            spy.wait(timeout=60)
        copy_window = _copy_window(fts.db)
        _check(src_root / "store/temp/user", dst_root / "store/user", tails)

        # the same service alone, same files, a fresh destination
        alone = base / "alone"
        _clean(alone)
        tool = open_transfer_tool("fts3", fts.url, str(people[0].proxy_path), ca_dir=str(fts.ca_dir))
        import datetime as dt

        tool.delegate(dt.timedelta(hours=48), dt.timedelta(hours=24))
        transfers = [Transfer(f"r{i}", (src_root / "store/temp/user" / t).as_uri(), (alone / t).as_uri(), size,
                              sums[i] if verify != "none" else None) for i, t in enumerate(tails)]
        options = JobOptions(verify_checksum=verify, overwrite=True, retry=0)
        console.print(f"  {case} {verify}: the service alone …")
        os.sync()
        start = time.perf_counter()
        jobs = [tool.submit(transfers[i:i + 50], options, f"alone-{case}-{verify}-{i}") for i in range(0, count, 50)]
        pending = set(jobs)
        while pending:
            # twice a second, as a client would: polling harder only takes CPU from the copies
            time.sleep(0.5)
            for job_id, result in tool.bulk_query(sorted(pending)).items():
                if result.terminal:
                    if result.state != "FINISHED":
                        raise RuntimeError(f"service alone: job {job_id} ended {result.state}")
                    pending.discard(job_id)
        service = time.perf_counter() - start
        tool.close()
        _check(src_root / "store/temp/user", alone, tails)

    # cp + sync
    copy = base / "cp"
    _clean(copy)
    copy.mkdir()
    console.print(f"  {case} {verify}: cp + sync …")
    start = time.perf_counter()
    subprocess.run(["cp", "--reflink=never", "-r", str(src_root / "store/temp/user"), str(copy)], check=True)
    os.sync()
    cp = time.perf_counter() - start
    result = CaseResult(case, verify, count, count * size, end_to_end, service, cp, rounds, copy_window)
    _clean(base)  # the next case needs the disk
    return result


def _check(src: Path, dst: Path, tails: list[str]) -> None:
    for t in tails:
        a, b = src / t, dst / t
        if not b.exists() or b.stat().st_size != a.stat().st_size:
            raise RuntimeError(f"{b} is missing or has the wrong size")


def main(args, console) -> int:
    import tempfile

    from rich.console import Console
    from rich.table import Table

    work = args.workdir or Path(tempfile.mkdtemp(prefix="aso-real-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    cases = args.case or list(CASES)
    verifies = args.verify or ["both", "none"]
    results = []
    for case in cases:
        for verify in verifies:
            profile = Path.cwd() / f"fts-{case}-{verify}.stacks" if args.profile_fts else None
            results.append(run_case(work, case, verify, args.users, console, profile, args.round_seconds).as_dict())
            console.print(f"    {results[-1]}")
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    table = Table(title="aso pipeline with real bytes: end to end (every component as cron runs it, aso fts-server "
                        "over HTTPS, its own process) vs the service alone vs cp + sync")
    cols = ("case", "verify", "files", "MiB", "end_to_end_s", "end_to_end_files_s", "end_to_end_MiB_s", "service_s",
            "service_files_s", "vs_service", "cp_sync_s", "vs_cp", "rounds", "fts_copy_s")
    for c in cols:
        table.add_column(c, justify="left" if c in ("case", "verify") else "right")
    for r in results:
        table.add_row(*(str(r[c]) for c in cols))
    Console(width=200).print(table)
    return 0
