"""One ASO host against three: files/s of the whole pipeline when the work is shared.

    python benchmarks/hosts.py                                  # 20,000 files, 200 users, 1 host then 3 hosts
    python benchmarks/hosts.py --files 5000 --users 50 --json
    python benchmarks/hosts.py --hosts 1 --hosts 2 --hosts 3    # any list of host counts

Each run starts from an empty state: one ``aso server`` under gunicorn on PostgreSQL
(``--db-url``, default $ASO_BENCH_POSTGRES_URL or $ASO_TEST_POSTGRES_URL; its tables are
dropped first), one ``aso fts-server --simulate`` (FTS bookkeeping real, no data moved), and
N installations (own config, ``[aso] worker``, sandbox). Every host runs the real commands
as cron would (``aso transfer``, then ``aso monitor``, ``aso reporter``), round after round,
each host in its own thread, until every row is DONE. The number is files over the wall
clock from the first pass to the last row DONE (injection not counted).

The pieces are benchmarks/pipeline.py's (requests, passes, the simulating service);
``--profile COMPONENT`` samples that component's passes with py-spy as there
(``COMPONENT-<N>hosts-host<H>-pass<P>.stacks``). The CPU columns say where the machine's time
went: every pass's processes, the gunicorn server (master and workers) and the fts-server
(PostgreSQL's own processes are not counted).
"""

from __future__ import annotations

import os
import sys

# benchmarks/copy.py shadows the standard library's ``copy``: keep this folder off the path.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import json
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.pipeline import (  # noqa: E402
    ComponentStats,
    make_requests,
    run_pass,
    start_simulating_fts,
    write_proxies,
)
from tests.procs import aso_command, free_port  # noqa: E402

console = Console(stderr=True)
COMPONENTS = ("transfer", "monitor", "reporter")


def fresh_database(url: str) -> None:
    from aso.state.store import Store

    store = Store(url)
    store.drop_all()
    store.close()


def make_hosts(work: Path, n_hosts: int, fts_url: str, state_url: str) -> list[Path]:
    """``n_hosts`` installations (configs returned) on one state server; all see the same
    site folders, as hosts of one deployment see the same storage."""
    configs = []
    sites = (work / "sites").as_uri()
    for h in range(n_hosts):
        root = work / f"host-{h}"
        settings = [f"state.url={state_url}", 'state.token="service-token"', 'aso.instance="test"',
                    f'aso.worker="host-{h}"', "transfer.acquire_limit=100000", "retry_manager.stuck_after=36000"]
        subprocess.run(aso_command("init", str(root), "--fts", fts_url, *[a for s in settings for a in ("--set", s)]),
                       check=True, capture_output=True)
        config = root / "aso.toml"
        config.write_text(config.read_text().replace((root / "sites").as_uri(), sites))
        configs.append(config)
    return configs


def rows_done(state_url: str) -> tuple[int, int]:
    """(DONE rows, all rows), one statistics call to the server."""
    from aso.state import open_backend

    backend = open_backend(state_url, worker="bench", token="service-token", instance="test")
    try:
        stats = backend.statistics()
    finally:
        backend.close()
    done = sum(r["count"] for r in stats if r["transfer_state"] == "DONE")
    return done, sum(r["count"] for r in stats)


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of a live process and its live descendants, and of the
    children they have waited for, read from /proc."""
    total, stack = 0.0, [pid]
    tick = os.sysconf("SC_CLK_TCK")
    while stack:
        p = stack.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15]) / tick  # utime stime cutime cstime
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended meanwhile
    return total


def _children_cpu() -> float:
    """CPU seconds of this process's finished children (every pass, once it has exited)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def host_loop(config: Path, stats: dict[str, ComponentStats], finished: threading.Event, errors: list[str],
              profiles: dict[str, Path], round_seconds: float) -> None:
    """One host's cron: transfer, monitor, reporter, again (a round at most every
    ``round_seconds``, as cron paces them), until every row is DONE."""
    cwd = config.parent
    n = 0
    try:
        while not finished.is_set():
            n += 1
            round_start = time.perf_counter()
            out = run_pass(config, "transfer", stats["transfer"], cwd, profile=_numbered(profiles.get("transfer"), n))
            stats["transfer"].files += out.get("files", 0)
            time.sleep(0.3)  # the simulated FTS finishes a round's files within its next scheduling round
            out = run_pass(config, "monitor", stats["monitor"], cwd, profile=_numbered(profiles.get("monitor"), n))
            stats["monitor"].files += sum(out.get("handed_over", {}).values())
            out = run_pass(config, "reporter", stats["reporter"], cwd, profile=_numbered(profiles.get("reporter"), n))
            stats["reporter"].files += sum(out.get("states", {}).values())
            # a host whose share is done idles like a cron host instead of taking the
            # machine from the others with back-to-back empty passes
            finished.wait(max(0.0, round_seconds - (time.perf_counter() - round_start)))
    except Exception as exc:  # reported by the main thread, which stops the run
        errors.append(f"{config.parent.name}: {exc}")
        finished.set()


def _numbered(path: Path | None, n: int) -> Path | None:
    return None if path is None else path.with_name(f"{path.stem}-pass{n}{path.suffix}")


def run(args, n_hosts: int, base: Path) -> dict:
    work = base / f"{n_hosts}-hosts"
    work.mkdir(parents=True)
    fresh_database(args.db_url)
    (work / "server").mkdir()
    from tests.state.servers import start_gunicorn_server

    server, state_url = start_gunicorn_server(work / "server", args.db_url, workers=args.gunicorn_workers)
    fts_port = free_port()
    services = [server]
    try:
        services.append(start_simulating_fts(work, fts_port))
        configs = make_hosts(work, n_hosts, f"http://127.0.0.1:{fts_port}", state_url)
        write_proxies(work, [c.parent / "proxies" for c in configs], args.users)
        # One pass of each component per host before there is work: every instance has
        # heartbeat, so the first real transfer pass already divides the users among all
        # hosts (a host that has not heartbeat yet is not reckoned with).
        warm = {c: ComponentStats() for c in COMPONENTS}
        for config in configs:
            for c in COMPONENTS:
                run_pass(config, c, warm[c], config.parent)
        console.print(f"[{n_hosts} host(s)] injecting {args.files} requests for {args.users} users …")
        requests = make_requests(args.files, args.users)
        for i in range(0, len(requests), 10000):
            path = work / "inject.json"
            path.write_text(json.dumps(requests[i:i + 10000]))
            subprocess.run(aso_command("--config", str(configs[0]), "inject", str(path)), check=True, capture_output=True)

        per_host = [{c: ComponentStats() for c in COMPONENTS} for _ in configs]
        finished = threading.Event()
        errors: list[str] = []
        threads = [threading.Thread(target=host_loop, daemon=True, args=(
            config, stats, finished, errors,
            {c: Path.cwd() / f"{c}-{n_hosts}hosts-host{h}.stacks" for c in args.profile}, args.round_seconds))
            for h, (config, stats) in enumerate(zip(configs, per_host, strict=True))]
        cpu_start = {"aso passes": _children_cpu(), "aso server (gunicorn)": tree_cpu_seconds(server.proc.pid),
                     "aso fts-server": tree_cpu_seconds(services[1].proc.pid)}
        start = time.perf_counter()
        for t in threads:
            t.start()
        done = 0
        while not finished.is_set():
            done, total = rows_done(state_url)
            if done >= args.files:
                break
            if time.perf_counter() - start > args.timeout:
                errors.append(f"not every row DONE after {args.timeout} s: {done}/{total}")
                break
            time.sleep(0.5)
        seconds = time.perf_counter() - start
        finished.set()
        for t in threads:
            t.join(timeout=300)
        cpu = {"aso passes": _children_cpu(), "aso server (gunicorn)": tree_cpu_seconds(server.proc.pid),
               "aso fts-server": tree_cpu_seconds(services[1].proc.pid)}
        cpu = {k: round(v - cpu_start[k], 1) for k, v in cpu.items()}
        if errors:
            raise RuntimeError("; ".join(errors))
    finally:
        for s in reversed(services):
            s.stop()
    components = []
    for c in COMPONENTS:
        parts = [h[c] for h in per_host]
        components.append({"component": f"aso {c}", "passes": sum(p.passes for p in parts),
                           "seconds": round(sum(p.seconds for p in parts), 2), "files": sum(p.files for p in parts),
                           "peak MB": round(max(p.peak_rss_mb for p in parts), 1)})
    return {"hosts": n_hosts, "round_seconds": args.round_seconds, "files": args.files, "users": args.users, "done": done, "seconds": round(seconds, 2),
            "files_per_second": round(args.files / seconds, 1),
            "files_per_host": [h["reporter"].files for h in per_host], "cpu_seconds": cpu, "components": components}


def print_table(summary: dict, gunicorn_workers: int) -> None:
    results = summary["runs"]
    first = results[0]
    table = Table(title=f"aso hosts: {summary['files']} files, {summary['users']} users, {summary['cpus']} CPUs; aso server under "
                        f"gunicorn ({gunicorn_workers} workers) on PostgreSQL; aso fts-server --simulate")
    for col in ("hosts", "seconds", "files/s", f"vs {first['hosts']} host(s)", "files per host",
                "transfer passes", "monitor passes", "reporter passes", "CPU s: passes", "server", "fts", "DONE"):
        table.add_column(col, justify="right")
    for r in results:
        passes = {c["component"]: c["passes"] for c in r["components"]}
        table.add_row(str(r["hosts"]), f"{r['seconds']:.1f}", f"{r['files_per_second']:.0f}", f"{r['ratio_to_first']:.2f}x",
                      " / ".join(map(str, r["files_per_host"])), str(passes["aso transfer"]), str(passes["aso monitor"]),
                      str(passes["aso reporter"]), *(f"{r['cpu_seconds'][k]:.1f}" for k in
                                                      ("aso passes", "aso server (gunicorn)", "aso fts-server")),
                      str(r["done"]))
    Console(width=160).print(table)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--hosts", type=int, action="append", help="host counts to run, in order (default: 1 and 3)")
    ap.add_argument("--db-url", default=os.environ.get("ASO_BENCH_POSTGRES_URL") or os.environ.get("ASO_TEST_POSTGRES_URL"),
                    help="PostgreSQL database of the aso server (its tables are dropped before each run)")
    ap.add_argument("--round-seconds", type=float, default=3.0,
                    help="each host starts a round of passes at most this often (default 3; cron's would be 60)")
    ap.add_argument("--gunicorn-workers", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=1800, help="seconds a run may take before it is abandoned")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--profile", action="append", default=[], metavar="COMPONENT",
                    help="sample this component's timed passes with py-spy (COMPONENT-<N>hosts-host<H>-pass<P>.stacks "
                         "in the current folder)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not args.db_url:
        ap.error("--db-url (or $ASO_BENCH_POSTGRES_URL / $ASO_TEST_POSTGRES_URL) is needed: a PostgreSQL database to use")
    host_counts = args.hosts or [1, 3]
    base = args.workdir or Path(tempfile.mkdtemp(prefix="aso-hosts-bench-"))
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    results = [run(args, n, base) for n in host_counts]
    first = results[0]
    for r in results:
        r["ratio_to_first"] = round(r["files_per_second"] / first["files_per_second"], 2)
    summary = {"files": args.files, "users": args.users, "cpus": os.cpu_count(), "runs": results,
               "mode": "aso server (gunicorn, PostgreSQL) + aso fts-server --simulate (no data moved)"}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print_table(summary, args.gunicorn_workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
