"""Copy throughput of aso fts-server next to cp, curl and xrdcp, on the same data in the same run.

    python benchmarks/copy.py                      # 1 x 2 GiB and 1000 x 1 MiB, as in docs/benchmarks.md
    python benchmarks/copy.py --big-mib 256 --small-count 200 --runs 1   # a quick look
    python benchmarks/copy.py --protocols root     # root:// only: 1 x 2 GiB, 2000 x 10 KiB
    python benchmarks/copy.py --staging            # 10,000 small files on tape, bring-online jobs

Cases: file:// (service vs cp), http:// from a local HTTP server (service vs curl) and
root:// between two local xrootd daemons (service vs xrdcp, which streams through itself as
the service does), for one big file and many small files (root:// has its own small files,
``--root-small-count`` × ``--root-small-kib``). The service is a real ``aso fts-server`` process in
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
import contextlib
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
from tests.xrootd_server import XrootdServer, xrootd_server  # noqa: E402

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


def _xrdcl_version() -> str:
    from XRootD.client._version import __version__

    return __version__


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


def root_data(site: XrootdServer, big: Path, count: int, kib: int) -> tuple[Path, list[Path]]:
    """The big file (a hard link where it can be) and ``count`` small files, below the
    source daemon's export and readable by it."""
    big_root = site.root / big.name
    try:
        os.link(big, big_root)
    except OSError:
        shutil.copyfile(big, big_root)
    site.give(big_root)
    site.mkdir("small")
    smalls = []
    for i in range(count):
        smalls.append(site.put(f"small/r{i:05d}.bin", os.urandom(kib * 1024)))
    return big_root, smalls


#: xrdcp's own engine (XrdCl's CopyProcess) from the Python bindings, i.e. the same client
#: library version as the service's plug-in (the system's xrdcp may be older)
_COPYPROCESS = """
import json, sys
from XRootD import client
pairs, parallel = json.load(open(sys.argv[1])), int(sys.argv[2])
process = client.CopyProcess()
process.parallel(parallel)
for source, target in pairs:
    process.add_job(source, target, force=True)
status = process.prepare()
assert status.ok, status
status, results = process.run()
bad = [r for r in results if not r["status"].ok]
assert status.ok and not bad, (status, bad[:3])
"""


def copyprocess(pairs: list[tuple[str, str]], parallel: int, work: Path) -> float:
    jobs = work / "copyprocess.json"
    jobs.write_text(json.dumps(pairs))
    return timed([sys.executable, "-c", _COPYPROCESS, str(jobs), str(parallel)])


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
    ap.add_argument("--protocols", default="file,http,root", help="comma-separated: file, http, root")
    ap.add_argument("--root-small-count", type=int, default=2000, help="number of small files over root://")
    ap.add_argument("--root-small-kib", type=int, default=10, help="size of each small file over root:// (KiB)")
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
    protocols = {p.strip() for p in args.protocols.split(",") if p.strip()}
    if protocols - {"file", "http", "root"}:
        ap.error(f"--protocols: unknown {sorted(protocols - {'file', 'http', 'root'})}")
    needed = {"file": ("cp",), "http": ("curl",), "root": ("xrdcp", "xrootd")}
    for tool in (t for p in sorted(protocols) for t in needed[p]):
        if not shutil.which(tool):
            ap.error(f"{tool} is needed")

    work = args.workdir or Path(tempfile.mkdtemp(prefix="aso-copy-bench-"))
    data = work / "data"
    console.print(f"preparing data in {work} …")
    # (root:// has small files of its own)
    big, smalls = make_data(data, args.big_mib, args.small_count if protocols & {"file", "http"} else 0, args.small_kib)
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
    exits = contextlib.ExitStack()
    if "root" in protocols:
        site_a = exits.enter_context(xrootd_server("bench-src"))
        site_b = exits.enter_context(xrootd_server("bench-dst"))
        console.print(f"preparing root:// data below {site_a.root} …")
        root_big, root_smalls = root_data(site_a, big, args.root_small_count, args.root_small_kib)
    results: list[Result] = []

    def run(case: str, tool: str, files: int, nbytes: int, fn, sources: list[Path], dest: Path) -> None:
        flush(out)
        if "root" in protocols:
            flush(site_b.root / "out")
            if site_b.root in dest.parents:
                site_b.mkdir(str(dest.relative_to(site_b.root)))
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
        pairs = {case: p for case, p in pairs.items() if case.split(":")[0] in protocols}
        data_of = {"file": (big, smalls, big_out, small_out), "http": (big, smalls, big_out, small_out)}
        if "root" in protocols:
            root_big_out, root_small_out = site_b.root / "out" / "big", site_b.root / "out" / "small"
            to_b = site_b.url_of(f"out/big/{root_big.name}")
            baselines[("root:// 1 big", "xrdcp")] = lambda: timed(["xrdcp", "-f", "-s", site_a.url_of(root_big.name), to_b])
            baselines[("root:// many small", "xrdcp")] = lambda: timed(
                ["xrdcp", "-f", "-s", "--parallel", str(args.workers), *(site_a.url_of(f"small/{p.name}") for p in root_smalls),
                 site_b.url_of("out/small") + "/"])
            engine = f"xrdcp engine (XrdCl {_xrdcl_version()})"
            baselines[("root:// 1 big", engine)] = lambda: copyprocess([(site_a.url_of(root_big.name), to_b)], 1, work)
            baselines[("root:// many small", engine)] = lambda: copyprocess(
                [(site_a.url_of(f"small/{p.name}"), site_b.url_of(f"out/small/{p.name}")) for p in root_smalls],
                args.workers, work)
            pairs["root:// 1 big"] = [(site_a.url_of(root_big.name), to_b)]
            pairs["root:// many small"] = [(site_a.url_of(f"small/{p.name}"), site_b.url_of(f"out/small/{p.name}"))
                                           for p in root_smalls]
            data_of["root"] = (root_big, root_smalls, root_big_out, root_small_out)
        cases = []
        for case, case_pairs in pairs.items():
            big_case = "big" in case
            protocol = case.split(":")[0]
            c_big, c_smalls, c_big_out, c_small_out = data_of[protocol]
            files, nbytes, sources, dest = ((1, c_big.stat().st_size, [c_big], c_big_out) if big_case else
                                            (len(c_smalls), sum(p.stat().st_size for p in c_smalls), c_smalls, c_small_out))
            tool = {"file": "cp", "http": "curl", "root": "xrdcp"}[protocol]
            fn = baselines[(case, tool)]
            cases.append((case, tool, files, nbytes, fn, sources, dest))
            if protocol == "root":
                cases.append((case, engine, files, nbytes, baselines[(case, engine)], sources, dest))
            if protocol != "root":  # (the xrootd daemon, not the copying tool, writes the files)
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
        exits.close()

    best: dict[tuple[str, str], Result] = {}
    for res in results:
        key = (res.case, res.tool)
        if key not in best or res.seconds < best[key].seconds:
            best[key] = res
    rows = []
    for (case, tool), res in best.items():
        plain = {"file": "cp", "http": "curl", "root": "xrdcp"}[case.split(":")[0]]
        # durable copies are compared with the baseline followed by sync, the others with the bare baseline
        durable = tool in ("aso fts-server", "aso fts-server, verify adler32 both") and plain != "xrdcp"
        base_tool = f"{plain} + sync" if durable else plain
        if plain == "xrdcp":  # the faster of the system's xrdcp and the bindings' copy engine
            base_tool = min((k[1] for k in best if k[0] == case and k[1].startswith("xrdcp")),
                            key=lambda t: best[(case, t)].seconds)
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
    sizes = [f"1 × {args.big_mib} MiB"]
    if protocols & {"file", "http"}:
        sizes.append(f"{args.small_count} × {args.small_kib} KiB")
    if "root" in protocols:
        sizes.append(f"root:// {args.root_small_count} × {args.root_small_kib} KiB")
    table = Table(title=f"aso fts-server copy throughput ({', '.join(sizes)}, {args.workers} workers, best of {args.runs})")
    columns = ("case", "tool", "seconds", "MiB/s", "files/s", "ratio", "target")
    for col in columns:
        table.add_column(col, justify="right" if col in ("seconds", "MiB/s", "files/s", "ratio") else "left")
    for row in rows:
        table.add_row(*(str(row[c]) for c in columns))
    Console(width=200).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
