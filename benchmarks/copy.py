"""Copy throughput of aso fts-server next to cp and curl, on the same data in the same run.

    python benchmarks/copy.py                      # 1 x 2 GiB and 1000 x 1 MiB, as in docs/benchmarks.md
    python benchmarks/copy.py --big-mib 256 --small-count 200 --runs 1   # a quick look
    python benchmarks/copy.py --staging            # 10,000 small files on tape, bring-online jobs

Cases: file:// (service vs cp) and http:// from a local HTTP server (service vs curl), for one
big file and many small files. The service is a real ``aso fts-server`` process in
plain-HTTP mode; the time is from the first submission until every job is terminal, as a
client polling in bulk sees it. Small files go in jobs of 50 (as ASO submits them). Each
tool runs ``--runs`` times, interleaved, and the best run counts. Destinations are removed
and flushed to disk between runs. The service fsyncs every file it writes (cp and curl do
not), so its numbers include durability the baselines do not pay for.

``--staging``: the tape case instead (docs/tape.md). ``--staging-count`` small files lie
under a tape root with recall delays drawn from [0, ``--staging-delay-max``] s; they are
copied once from disk (the same files, a service without tape roots) and once as
bring-online jobs of ``--per-job`` files (as aso submits them). The target: the tape run
takes at most 1.2 × (the longest recall + the disk run), i.e. recalls overlap the copies
and staging adds little of its own.
"""

from __future__ import annotations

import os
import sys

# This script is named like the standard library's ``copy`` module, which dataclasses and
# others import: keep its own folder off the import path.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.procs import Service, aso_command, free_port  # noqa: E402

MiB = 1024 * 1024
TERMINAL = {"FINISHED", "FINISHEDDIRTY", "FAILED", "CANCELED"}
console = Console(stderr=True)


@dataclass
class Result:
    case: str
    tool: str
    seconds: float
    files: int
    nbytes: int

    @property
    def mib_s(self) -> float:
        return self.nbytes / MiB / self.seconds

    @property
    def files_s(self) -> float:
        return self.files / self.seconds


def make_data(root: Path, big_mib: int, small_count: int, small_kib: int) -> tuple[Path, list[Path]]:
    root.mkdir(parents=True, exist_ok=True)
    big = root / "big.bin"
    if not big.exists() or big.stat().st_size != big_mib * MiB:
        block = os.urandom(64 * MiB)
        with open(big, "wb") as fh:
            for i in range(0, big_mib, 64):
                fh.write(block[: min(64, big_mib - i) * MiB])
    small_dir = root / "small"
    small_dir.mkdir(exist_ok=True)
    smalls = []
    for i in range(small_count):
        p = small_dir / f"f{i:05d}.bin"
        if not p.exists() or p.stat().st_size != small_kib * 1024:
            p.write_bytes(os.urandom(small_kib * 1024))
        smalls.append(p)
    return big, smalls


def flush(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    os.sync()


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def service_copy(fts_url: str, pairs: list[tuple[str, str]], per_job: int, verify: bool,
                 params: dict | None = None) -> float:
    http = requests.Session()
    start = time.perf_counter()
    ids = []
    for i in range(0, len(pairs), per_job):
        files = [{"sources": [s], "destinations": [d]} for s, d in pairs[i:i + per_job]]
        resp = http.post(f"{fts_url}/jobs", json={"files": files, "params": {"verify_checksum": verify, **(params or {})}}, timeout=60)
        resp.raise_for_status()
        ids.append(resp.json()["job_id"])
    pending = set(ids)
    while pending:
        chunk = sorted(pending)[:100]
        jobs = http.get(f"{fts_url}/jobs/{','.join(chunk)}", timeout=60).json()
        jobs = jobs if isinstance(jobs, list) else [jobs]
        for job in jobs:
            if job["job_state"] in TERMINAL:
                if job["job_state"] != "FINISHED":
                    files = http.get(f"{fts_url}/jobs/{job['job_id']}/files", timeout=60).json()
                    raise RuntimeError(f"job {job['job_id']} ended {job['job_state']}: {[f['reason'] for f in files if f['reason']][:3]}")
                pending.discard(job["job_id"])
        if pending:
            time.sleep(0.02)
    return time.perf_counter() - start


def check_copy(sources: list[Path], dest_dir: Path) -> None:
    for src in sources:
        dst = dest_dir / src.name
        if not dst.exists() or dst.stat().st_size != src.stat().st_size:
            raise RuntimeError(f"{dst} is missing or has the wrong size")


def staging_benchmark(args, work: Path) -> int:
    """The tape case: the same files copied from disk, then staged from tape and copied."""
    from aso.ftsd.staging import recall_delay

    tape = work / "tape"
    tape.mkdir(parents=True, exist_ok=True)
    console.print(f"preparing {args.staging_count} × {args.small_kib} KiB in {tape} …")
    files = []
    for i in range(args.staging_count):
        p = tape / f"t{i:05d}.bin"
        if not p.exists() or p.stat().st_size != args.small_kib * 1024:
            p.write_bytes(os.urandom(args.small_kib * 1024))
        files.append(p)
    out = work / "out"
    longest = max(recall_delay(str(p), 0.0, args.staging_delay_max) for p in files)
    pairs = [(p.as_uri(), (out / p.name).as_uri()) for p in files]
    best: dict[str, float] = {}

    def serve(tag: str, extra: list[str]) -> tuple[str, Service]:
        port = free_port()
        db = work / f"fts-{tag}.db"
        for leftover in work.glob(f"fts-{tag}.db*"):
            leftover.unlink()
        return f"http://127.0.0.1:{port}", Service(
            aso_command("--log-level", "WARNING", "fts-server", "--port", str(port), "--db", str(db),
                        "--workers", str(args.workers), "--per-link", str(args.workers), "--root", str(work), *extra),
            port, work / f"fts-{tag}.log").start()

    cases = [("from disk", [], {}),
             ("from tape, bring_online", ["--tape-root", str(tape), "--staging-delay", "0", str(args.staging_delay_max)],
              {"bring_online": 3600})]
    for r in range(args.runs):
        console.print(f"run {r + 1}/{args.runs}")
        # the order alternates, so neither case always follows the other's deletions
        for case, extra, params in (cases if r % 2 == 0 else cases[::-1]):
            url, service = serve("tape" if params else "disk", extra)
            try:
                flush(out)
                out.mkdir(parents=True)
                seconds = service_copy(url, pairs, args.per_job, False, params)
                check_copy(files, out)
            finally:
                service.stop()
            console.print(f"  {case:<26} {seconds:8.2f} s")
            best[case] = min(seconds, best.get(case, seconds))
    flush(out)
    disk, staged = best["from disk"], best["from tape, bring_online"]
    bound = longest + disk
    rows = [
        ("copy from disk", f"{disk:.2f}", f"{len(files) / disk:.0f}", ""),
        ("longest recall (robot)", f"{longest:.2f}", "", ""),
        ("bring-online jobs from tape", f"{staged:.2f}", f"{len(files) / staged:.0f}",
         f"{staged / bound:.2f} × (longest recall + disk): ≤ 1.2 {'met' if staged <= 1.2 * bound else 'MISSED'}"),
    ]
    if args.json:
        print(json.dumps({"files": len(files), "kib": args.small_kib, "per_job": args.per_job, "workers": args.workers,
                          "delay_max": args.staging_delay_max, "disk_seconds": round(disk, 3),
                          "longest_recall": round(longest, 3), "tape_seconds": round(staged, 3),
                          "ratio": round(staged / bound, 3)}, indent=2))
        return 0
    table = Table(title=f"aso fts-server staging ({len(files)} × {args.small_kib} KiB on tape, recalls 0–"
                        f"{args.staging_delay_max:g} s, jobs of {args.per_job}, {args.workers} workers, best of {args.runs})")
    for col in ("case", "seconds", "files/s", "target"):
        table.add_column(col, justify="left" if col in ("case", "target") else "right")
    for row in rows:
        table.add_row(*row)
    Console(width=200).print(table)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--big-mib", type=int, default=2048, help="size of the big file (MiB)")
    ap.add_argument("--small-count", type=int, default=1000, help="number of small files")
    ap.add_argument("--small-kib", type=int, default=1024, help="size of each small file (KiB)")
    ap.add_argument("--workers", type=int, default=8, help="aso fts-server --workers and --per-link")
    ap.add_argument("--runs", type=int, default=2, help="runs per tool (the best counts)")
    ap.add_argument("--workdir", type=Path, default=None, help="where data and copies go (default: a temporary folder)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--staging", action="store_true", help="run the tape case instead (bring-online jobs)")
    ap.add_argument("--staging-count", type=int, default=10_000, help="files on tape (--staging)")
    ap.add_argument("--staging-delay-max", type=float, default=5.0, help="longest recall in seconds (--staging)")
    ap.add_argument("--per-job", type=int, default=200, help="files per bring-online job (--staging)")
    args = ap.parse_args()
    if args.staging:
        if args.small_kib == 1024 and "--small-kib" not in sys.argv:
            args.small_kib = 4
        if "--runs" not in sys.argv:
            args.runs = 1
        return staging_benchmark(args, args.workdir or Path(tempfile.mkdtemp(prefix="aso-staging-bench-")))
    for tool in ("cp", "curl"):
        if not shutil.which(tool):
            ap.error(f"{tool} is needed")

    work = args.workdir or Path(tempfile.mkdtemp(prefix="aso-copy-bench-"))
    data = work / "data"
    console.print(f"preparing data in {work} …")
    big, smalls = make_data(data, args.big_mib, args.small_count, args.small_kib)
    out = work / "out"

    http_port = free_port()
    web = Service([sys.executable, "-m", "http.server", str(http_port), "--bind", "127.0.0.1", "--directory", str(data)],
                  http_port, work / "http.log").start()
    services = {}
    for name, extra in (("aso fts-server", []), ("aso fts-server --no-fsync", ["--no-fsync"])):
        port = free_port()
        tag = "nofsync" if extra else "fsync"
        services[name] = (f"http://127.0.0.1:{port}", Service(
            aso_command("--log-level", "WARNING", "fts-server", "--port", str(port), "--db", str(work / f"fts-{tag}.db"),
                        "--workers", str(args.workers), "--per-link", str(args.workers), "--root", str(work), *extra),
            port, work / f"fts-{tag}.log").start())
    web_url = f"http://127.0.0.1:{http_port}"
    results: list[Result] = []
    small_bytes = sum(p.stat().st_size for p in smalls)
    big_bytes = big.stat().st_size

    def run(case: str, tool: str, files: int, nbytes: int, fn, sources: list[Path], dest: Path) -> None:
        flush(out)
        dest.mkdir(parents=True, exist_ok=True)
        seconds = fn()
        check_copy(sources, dest)
        results.append(Result(case, tool, seconds, files, nbytes))
        console.print(f"  {case:<20} {tool:<38} {seconds:8.2f} s")

    def then_sync(fn):
        def both():
            start = time.perf_counter()
            fn()
            os.sync()
            return time.perf_counter() - start
        return both

    try:
        curl_cfg = work / "curl-small.cfg"
        curl_cfg.write_text("".join(f'url = "{web_url}/small/{p.name}"\noutput = "{out}/small/{p.name}"\n' for p in smalls))
        big_out, small_out = out / "big", out / "small"
        baselines = {
            ("file:// 1 big", "cp"): lambda: timed(["cp", str(big), str(big_out / big.name)]),
            ("file:// many small", "cp"): lambda: timed(["cp", *map(str, smalls), str(small_out)]),
            ("http:// 1 big", "curl"): lambda: timed(["curl", "-sf", "-o", str(big_out / big.name), f"{web_url}/big.bin"]),
            ("http:// many small", "curl"): lambda: timed(["curl", "-sf", "-K", str(curl_cfg)]),
        }
        pairs = {
            "file:// 1 big": [(big.as_uri(), (big_out / big.name).as_uri())],
            "file:// many small": [(p.as_uri(), (small_out / p.name).as_uri()) for p in smalls],
            "http:// 1 big": [(f"{web_url}/big.bin", (big_out / big.name).as_uri())],
            "http:// many small": [(f"{web_url}/small/{p.name}", (small_out / p.name).as_uri()) for p in smalls],
        }
        cases = []
        for case, case_pairs in pairs.items():
            big_case = "big" in case
            files, nbytes, sources, dest = (1, big_bytes, [big], big_out) if big_case else (len(smalls), small_bytes, smalls, small_out)
            tool = "cp" if case.startswith("file") else "curl"
            fn = baselines[(case, tool)]
            cases.append((case, tool, files, nbytes, fn, sources, dest))
            cases.append((case, f"{tool} + sync", files, nbytes, then_sync(fn), sources, dest))
            for name, (url, _) in services.items():
                cases.append((case, name, files, nbytes,
                              lambda url=url, cp=case_pairs: service_copy(url, cp, 50, False), sources, dest))
            if big_case:
                url = services["aso fts-server"][0]
                cases.append((case, "aso fts-server, verify adler32 both", files, nbytes,
                              lambda url=url, cp=case_pairs: service_copy(url, cp, 50, True), sources, dest))
        for r in range(args.runs):
            console.print(f"run {r + 1}/{args.runs}")
            for case in cases:
                run(*case)
    finally:
        for _, service in services.values():
            service.stop()
        web.stop()
        flush(out)

    best: dict[tuple[str, str], Result] = {}
    for res in results:
        key = (res.case, res.tool)
        if key not in best or res.seconds < best[key].seconds:
            best[key] = res
    rows = []
    for (case, tool), res in best.items():
        plain = "cp" if case.startswith("file") else "curl"
        # durable copies are compared with the baseline followed by sync, the others with the bare baseline
        base_tool = f"{plain} + sync" if tool in ("aso fts-server", "aso fts-server, verify adler32 both") else plain
        ratio = best[(case, base_tool)].seconds / res.seconds
        target = ""
        if tool.startswith("aso"):
            if "adler32" in tool:
                target = f"vs {base_tool} (information)"
            elif "small" in case:
                # the target for many small files is a rate, not a ratio
                target = f"≥ 200 files/s {'met' if res.files_s >= 200 else 'MISSED'}"
            else:
                goal = 0.9 if plain == "cp" else 0.8
                target = f"vs {base_tool}: ≥ {goal:.0%} {'met' if ratio >= goal else 'MISSED'}"
        rows.append({"case": case, "tool": tool, "seconds": round(res.seconds, 3), "MiB/s": round(res.mib_s, 1),
                     "files/s": round(res.files_s, 1), "ratio": f"{ratio:.0%}" if tool.startswith("aso") else "",
                     "target": target})

    if args.json:
        print(json.dumps({"big_mib": args.big_mib, "small_count": args.small_count, "small_kib": args.small_kib,
                          "workers": args.workers, "runs": args.runs, "results": rows}, indent=2))
        return 0
    table = Table(title=f"aso fts-server copy throughput (1 × {args.big_mib} MiB, {args.small_count} × {args.small_kib} KiB, "
                        f"{args.workers} workers, best of {args.runs})")
    columns = ("case", "tool", "seconds", "MiB/s", "files/s", "ratio", "target")
    for col in columns:
        table.add_column(col, justify="right" if col in ("seconds", "MiB/s", "files/s", "ratio") else "left")
    for row in rows:
        table.add_row(*(str(row[c]) for c in columns))
    Console(width=200).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
