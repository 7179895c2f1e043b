"""The transfer pipeline end to end: per component files/s and peak memory, and the total.

    python benchmarks/pipeline.py --files 100000 --users 1000             # local SQLite backend
    python benchmarks/pipeline.py --files 100000 --users 1000 --rest      # through an aso server
    python benchmarks/pipeline.py --files 10000 --users 100               # the 10k point of the scaling check
    python benchmarks/pipeline.py --real                                  # real bytes: see benchmarks/pipeline_real.py
    python benchmarks/pipeline.py --files 100000 --users 1000 --topology  # 20 sites: implied links vs 380 links + limits
    python benchmarks/pipeline.py --files 10000 --users 100 --two-hop     # one-hop run beside a two-hop run
    python benchmarks/pipeline.py --files 100000 --users 1000 --baseline /work/baseline  # this code vs another checkout
    python benchmarks/pipeline.py --files 100000 --users 1000 --postgres postgresql+psycopg://postgres@127.0.0.1/aso_bench
                                                                          # local backend on PostgreSQL (emptied first)

Runs the real commands (``aso transfer``, ``aso monitor``, ``aso reporter``, ``aso publisher``,
``aso retry-manager``) as cron would, pass after pass until every row is DONE and every file
flagged for publication is in the catalog (every ``--publish-every``-th file; each user's
task is final, so its last partial block closes at once), against ``aso fts-server --simulate`` over plain
HTTP: FTS bookkeeping is real (jobs, files, states, bulk status), but no data moves, so
the numbers are aso's own. Delegation over plain HTTP is not needed, so the delegation cost
is measured on its own line: first-time delegation of ``--delegation-users`` users to an
HTTPS aso fts-server (one RSA key pair per user on the FTS side).

``--baseline PATH`` runs the very same benchmark with the ``aso`` code of another checkout
(its tree first on ``PYTHONPATH`` for every ``aso`` command and the ``aso server``; the
``aso fts-server`` stays this checkout's, as the FTS side is not what is compared), the two
runs alternating ``--repeat`` times, and prints both and the ratio per component.

Peak memory is the largest resident set of any pass of the component: the process's own
high-water mark (``VmHWM`` in /proc/self/status, read as it exits). ``wait4``'s ru_maxrss
would not do: Linux carries the forking parent's resident size across exec into it.
"""

from __future__ import annotations

import os
import sys

# benchmarks/copy.py is named like the standard library's ``copy`` module, which dataclasses
# and others import: keep this folder off the import path.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import json
import shutil
import subprocess
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.procs import Service, aso_command, free_port  # noqa: E402

console = Console(stderr=True)
LINKS = (("T2_XX_Source", "T2_YY_Dest"), ("T2_XX_Source", "T2_ZZ_Dest"), ("T2_YY_Dest", "T2_ZZ_Dest"))


@dataclass
class ComponentStats:
    seconds: float = 0.0
    #: CPU seconds (user + system) of the component's processes: less sensitive than the
    #: wall time to what else the machine runs
    cpu: float = 0.0
    passes: int = 0
    peak_rss_mb: float = 0.0
    files: int = 0
    outputs: list = field(default_factory=list)


#: component -> py-spy output file (``--profile``)
PROFILE: dict[str, Path] = {}
#: more py-spy options (``--profile-gil``: only the thread holding the GIL, i.e. where the
#: CPU goes, not where threads wait)
PROFILE_OPTIONS: list[str] = []


#: runs the aso CLI and, as it exits, writes its own peak resident set (kB) to $ASO_BENCH_HWM
_WITH_HWM = (
    "import atexit, os, runpy, sys\n"
    "def _hwm():\n"
    "    line = next(x for x in open('/proc/self/status') if x.startswith('VmHWM:'))\n"
    "    open(os.environ['ASO_BENCH_HWM'], 'w').write(line.split()[1])\n"
    "atexit.register(_hwm)\n"
    "sys.argv[0] = 'aso'\n"
    "runpy.run_module('aso.cli', run_name='__main__', alter_sys=True)\n"
)


def tree_env(tree: Path) -> dict[str, str]:
    """The environment that makes ``python -m aso.cli`` run the checkout at ``tree`` (started
    in a folder without an ``aso`` package: ``-m`` and ``-c`` put the current folder first)."""
    return {**os.environ, "PYTHONPATH": str(tree)}


def run_pass(config: Path, component: str, stats: ComponentStats, cwd: Path, tree: Path = ROOT,
             profile: Path | None = None) -> dict:
    """One pass of ``component`` with the aso code of ``tree``; sampled with py-spy into
    ``profile`` (default: the component's ``--profile`` file) when there is one."""
    start = time.perf_counter()
    hwm_file = cwd / f".hwm-{component}"
    command = [sys.executable, "-c", _WITH_HWM, "--config", str(config), "--log-level", "WARNING", component, "--json"]
    profile = profile or PROFILE.get(component)
    if profile is not None:
        # py-spy samples every thread (cProfile would see only the main one)
        command = ["py-spy", "record", "--format", "raw", "--rate", "200", *PROFILE_OPTIONS, "-o", str(profile),
                   "--", *command]
    proc = subprocess.Popen(command, env={**tree_env(tree), "ASO_BENCH_HWM": str(hwm_file)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd)
    # stderr read beside stdout: a pass that logs more than a pipe holds would block on it
    # while this waited for stdout to end (communicate() would reap the child before wait4)
    err_chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()), daemon=True)
    reader.start()
    out = proc.stdout.read()
    reader.join()
    err = b"".join(err_chunks)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    stats.seconds += time.perf_counter() - start
    stats.cpu += usage.ru_utime + usage.ru_stime
    stats.passes += 1
    stats.peak_rss_mb = max(stats.peak_rss_mb, int(hwm_file.read_text()) / 1024)
    if proc.returncode != 0:
        raise RuntimeError(f"aso {component} exited {proc.returncode}: {err.decode()[-2000:]}")
    # under py-spy its own lines come first on stdout: the summary is the JSON after them
    text = out.decode()
    start = text.find("{")
    return json.JSONDecoder().raw_decode(text[start:])[0] if start >= 0 else {}


@dataclass
class Case:
    """One configuration the pipeline runs with: its name, the site pairs the files go
    over, and what is appended to aso.toml (more sites, [[links]], limits)."""

    name: str
    pairs: tuple[tuple[str, str], ...] = LINKS
    toml: str = ""
    settings: tuple[str, ...] = ()


#: stands for the case's own site folder in a Case's toml (known once its folder is made)
SITES_URI = "@SITES@"


def _sites_toml(fts_url: str, names: list[str], extra: dict[str, str] | None = None) -> str:
    lines = []
    for name in names:
        lines += [f"[sites.{name}]", f'prefix = "{SITES_URI}/{name}"', f'fts = "{fts_url}"']
        if extra and name in extra:
            lines.append(extra[name])
        lines.append("")
    return "\n".join(lines)


def topology_cases(fts_url: str, n_files: int, n_sites: int = 20, seed: int = 14) -> list[Case]:
    """The same files over ``n_sites`` sites: with the implied full mesh and no limits, then
    with every ordered pair a configured link (random distances 1-10, so a direct link always
    beats a two-hop path under the hop penalty of 10), four sites open to multi-hop, and
    limits on every site and link that are active but never binding (the throttled
    acquisition runs its counts and allocation, and holds nothing back)."""
    import random

    rng = random.Random(seed)
    names = [f"T2_S{i:02d}" for i in range(n_sites)]
    pairs = tuple((a, b) for a in names for b in names if a != b)
    big = n_files + 1
    plain = Case("plain (implied links)", pairs, _sites_toml(fts_url, names))
    limits = {n: f"max_incoming = {big}\nmax_outgoing = {big}" + ("\navailable_for_multihop = true" if i < 4 else "")
              for i, n in enumerate(names)}
    links = []
    for a, b in pairs:
        links += ["[[links]]", f'source = "{a}"', f'destination = "{b}"', f"distance = {rng.randint(1, 10)}",
                  f"max_files = {big}", ""]
    topo = Case(f"topology ({len(pairs)} links, limits)", pairs,
                _sites_toml(fts_url, names, limits) + "\n".join(links), ("topology.default_distance=0",))
    return [plain, topo]


def hop_cases(fts_url: str) -> list[Case]:
    """A -> C over a direct link, then over A -> B -> C (no direct link): every file one
    two-hop FTS job, as Rucio submits multi-hop paths."""
    names = ["T2_HA", "T2_HB", "T2_HC"]
    direct = Case("one hop", (("T2_HA", "T2_HC"),), _sites_toml(fts_url, names))
    links = "\n".join(["[[links]]", 'source = "T2_HA"', 'destination = "T2_HB"', "",
                       "[[links]]", 'source = "T2_HB"', 'destination = "T2_HC"', ""])
    two = Case("two hops", (("T2_HA", "T2_HC"),),
               _sites_toml(fts_url, names, {"T2_HB": "available_for_multihop = true"}) + links,
               ("topology.default_distance=0",))
    return [direct, two]


def task_of(user: str) -> str:
    return f"221122_000000:{user}_bench"


def make_requests(n_files: int, n_users: int, pairs: tuple[tuple[str, str], ...] = LINKS,
                  publish_every: int = 0, start: int = 0) -> list[dict]:
    """Requests ``start`` to ``n_files`` over ``n_users`` users (one task each; a slice at a
    time: a million at once would be a gigabyte of dicts in the benchmark itself); every
    ``publish_every``-th file flagged for publication (0: none)."""
    requests = []
    for i in range(start, n_files):
        user = f"user{i % n_users:04d}"
        src, dst = pairs[i % len(pairs)]
        tail = f"{user}/bench/{i // 1000:04d}/out_{i}.root"
        requests.append({
            "username": user, "taskname": task_of(user), "source": src, "destination": dst,
            "source_lfn": f"/store/temp/user/{tail}", "destination_lfn": f"/store/user/{tail}",
            "filesize": 1000 + i % 1000, "checksum": f"{zlib.adler32(tail.encode()):08x}",
            "publish": int(bool(publish_every) and i % publish_every == 0),
            "job_id": str(i), "job_retry_count": 0, "type": "output",
        })
    return requests


def start_simulating_fts(work: Path, port: int) -> Service:
    """``aso fts-server --simulate`` over plain HTTP on ``port``, its database in ``work``."""
    return Service(aso_command("--log-level", "WARNING", "fts-server", "--port", str(port), "--db", str(work / "fts.db"),
                               "--simulate", "--poll-seconds", "0.2", "--root", str(work)), port, work / "fts.log").start()


def write_proxies(work: Path, folders: list[Path], n_users: int) -> None:
    """One valid proxy under every user's name (user0000 …) in each of ``folders``: over
    plain HTTP the FTS side reads none of them, but the directory source checks each one it
    hands out."""
    from aso.x509.pki import make_ca, make_proxy, make_user_cert

    ca = make_ca(work / "ca", key_path=work / "ca-key.pem")
    template = work / "proxy-template.pem"
    make_proxy(make_user_cert(ca, "bench"), hours=72).write_proxy(template)
    for folder in folders:
        for u in range(n_users):
            shutil.copyfile(template, folder / f"user{u:04d}.pem")


def publication_inputs(requests: list[dict], n_users: int) -> dict:
    """What CRAB would have stored for publication: each user's task (final, so the last
    partial block of a task closes in the same pass) and the metadata of every file to publish."""
    tasks = [{"tm_taskname": task_of(f"user{u:04d}"), "tm_username": f"user{u:04d}",
              "tm_publish_name": f"/Bench/user{u:04d}-bench-v1/USER", "tm_task_status": "COMPLETED"}
             for u in range(n_users)]
    metadata = [{"lfn": r["destination_lfn"], "taskname": r["taskname"],
                 "metadata": {"outdataset": f"/Bench/{r['username']}-bench-v1/USER", "inevents": 10,
                              "runlumi": {"1": [int(r["job_id"]) + 1]}, "swversion": "CMSSW_13_0_0"}}
                for r in requests if r["publish"]]
    return {"tasks": tasks, "metadata": metadata}


#: stores tasks and file metadata through the state backend of the checkout it runs in
#: (argv: config, JSON file of publication_inputs); the backend's home moved after 3cb02fa
_PUBLICATION_SETUP = (
    "import json, sys\n"
    "from aso.config import load_config\n"
    "try:\n"
    "    from aso.state.factory import backend_from_config\n"
    "except ImportError:\n"
    "    from aso.state.backend import backend_from_config\n"
    "backend = backend_from_config(load_config(sys.argv[1]))\n"
    "data = json.load(open(sys.argv[2]))\n"
    "backend.upsert_tasks(data['tasks'])\n"
    "for i in range(0, len(data['metadata']), 10000):\n"
    "    backend.put_file_metadata(data['metadata'][i:i + 10000])\n"
)


def delegation_timing(work: Path, n_users: int) -> float:
    """Seconds per first-time delegation of a user to an HTTPS aso fts-server."""
    import datetime as dt

    from aso.transfertools import open_transfer_tool
    from tests.pki import build_pki, fts_server_https

    pki = build_pki(work / "pki", users=())
    users = [pki.add_user(f"deleg{i:03d}") for i in range(n_users)]
    (work / "fts-https").mkdir(exist_ok=True)
    with fts_server_https(pki, work / "fts-https") as srv:
        start = time.perf_counter()
        for user in users:
            tool = open_transfer_tool("fts3", srv.url, str(user.proxy_path), ca_dir=str(srv.ca_dir))
            tool.delegate(dt.timedelta(hours=48), dt.timedelta(hours=24))
            tool.close()
        return (time.perf_counter() - start) / n_users


def bench_state_url(args) -> str | None:
    """The state URL the components get: ``--state-url`` as it is, or ``--postgres`` emptied
    (every aso table dropped, so each run starts from the same empty database)."""
    if args.state_url:
        return args.state_url
    if not args.postgres:
        return None
    from aso.state.store import Store

    store = Store(args.postgres)
    store.drop_all()
    store.close()
    return args.postgres


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--rest", action="store_true", help="state backend through an aso server (else local SQLite)")
    ap.add_argument("--delegation-users", type=int, default=20, help="users for the first-time delegation line (0: skip)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--postgres", metavar="URL", default=None,
                    help="the components use this PostgreSQL database directly as their state URL (its aso tables are "
                         "dropped first; default: local SQLite in the work folder)")
    ap.add_argument("--inject-batch", type=int, default=10000, help="requests per aso inject call (default 10000)")
    ap.add_argument("--state-url", metavar="URL", default=None,
                    help="use this state database as it is (not emptied), e.g. one holding a history of finished rows "
                         "(benchmarks/history.py)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--real", action="store_true",
                    help="real bytes end to end, beside the service alone and cp + sync (benchmarks/pipeline_real.py)")
    ap.add_argument("--case", action="append", choices=["10000x256K", "1000x4M", "5x1G"], help="--real: case(s) to run")
    ap.add_argument("--verify", action="append", choices=["both", "none"], help="--real: checksum mode(s)")
    ap.add_argument("--round-seconds", type=float, default=3.0,
                    help="--real: start a round of component passes at most this often (default 3)")
    ap.add_argument("--profile-fts", action="store_true",
                    help="--real: sample the FTS service with py-spy during the end-to-end run (fts-CASE-VERIFY.stacks)")
    ap.add_argument("--topology", action="store_true",
                    help="20 sites: implied links and no limits, then 380 configured links with limits (path selection "
                         "and throttled acquisition), side by side")
    ap.add_argument("--two-hop", action="store_true", help="a one-hop run, then every file over a two-hop path")
    ap.add_argument("--profile", action="append", default=[], metavar="COMPONENT",
                    help="sample this component's passes with py-spy (pip install py-spy), writing collapsed stacks "
                         "to COMPONENT.stacks in the current folder")
    ap.add_argument("--profile-gil", action="store_true",
                    help="--profile: sample only the thread holding the GIL (where the CPU goes)")
    ap.add_argument("--publish-every", type=int, default=2, metavar="N",
                    help="flag every N-th file for publication (default 2: half of them; 0: none)")
    ap.add_argument("--baseline", type=Path, default=None, metavar="PATH",
                    help="also run the same benchmark with the aso code of the checkout at PATH and print both and "
                         "the ratio (plain case only)")
    ap.add_argument("--repeat", type=int, default=1, help="--baseline: runs of each code, alternating (median shown)")
    args = ap.parse_args()
    if args.baseline and (args.topology or args.two_hop or args.real):
        ap.error("--baseline compares the plain case only (not with --topology, --two-hop or --real)")
    if args.baseline and not (args.baseline / "aso" / "cli").is_dir():
        ap.error(f"--baseline: {args.baseline} is not an aso checkout (no aso/cli in it)")
    if args.real:
        from benchmarks.pipeline_real import main as real_main

        if args.users == 100:
            args.users = 10
        return real_main(args, console)
    for name in args.profile:
        PROFILE[name] = Path.cwd() / f"{name}.stacks"
    if args.profile_gil:
        PROFILE_OPTIONS.append("--gil")

    base = args.workdir or Path(tempfile.mkdtemp(prefix="aso-pipeline-bench-"))
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    fts_port = free_port()
    fts_url = f"http://127.0.0.1:{fts_port}"
    if args.topology:
        cases = topology_cases(fts_url, args.files)
    elif args.two_hop:
        cases = hop_cases(fts_url)
    else:
        cases = [Case("plain")]
    if args.baseline:
        result = comparison(compare(args, fts_port, base))
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print_comparison(result)
        return 0
    summaries = []
    for n, case in enumerate(cases):
        work = base / f"case{n}"
        summaries.append(run_case(args, case, work, fts_port, with_delegation=(n == len(cases) - 1)))
    if args.json:
        print(json.dumps(summaries[0] if len(summaries) == 1 else summaries, indent=2))
        return 0
    for summary in summaries:
        print_summary(args, summary)
    if len(summaries) == 2:
        a, b = summaries
        ta = next(r["seconds"] for r in a["components"] if r["component"] == "aso transfer")
        tb = next(r["seconds"] for r in b["components"] if r["component"] == "aso transfer")
        console.print(f"[bold]{b['case']}[/] / [bold]{a['case']}[/]: aso transfer {tb / ta:.2f}x "
                      f"({tb:.2f} s vs {ta:.2f} s), end to end {b['end_to_end_seconds'] / a['end_to_end_seconds']:.2f}x; "
                      f"DONE {a['done']}/{a['files']} and {b['done']}/{b['files']}")
    return 0


COMPONENTS = ("transfer", "monitor", "reporter", "publisher", "retry-manager")


def run_case(args, case: Case, work: Path, fts_port: int, with_delegation: bool = True, tree: Path = ROOT) -> dict:
    """One run of the pipeline with the aso code of ``tree`` (the FTS service is always this
    checkout's)."""
    work.mkdir(parents=True)
    env = tree_env(tree)
    fts = start_simulating_fts(work, fts_port)
    services = [fts]
    settings = ["--set", "transfer.acquire_limit=100000", "--set", "retry_manager.stuck_after=36000"]
    settings += [a for s in case.settings for a in ("--set", s)]
    state_url = bench_state_url(args)
    if state_url:
        settings += ["--set", f"state.url={state_url}"]
    if args.rest:
        from tests.state.servers import write_server_config

        (work / "server").mkdir()
        port = free_port()
        server = Service(aso_command("--config", str(write_server_config(work / "server")), "server", "--host", "127.0.0.1",
                                     "--port", str(port)), port, work / "server" / "server.log", env=env, cwd=str(work)).start()
        services.append(server)
        settings += ["--set", f"state.url=http://127.0.0.1:{port}", "--set", 'state.token="service-token"',
                     "--set", 'aso.instance="test"']
    try:
        subprocess.run(aso_command("init", str(work / "aso"), "--fts", f"http://127.0.0.1:{fts_port}", *settings),
                       check=True, capture_output=True, env=env, cwd=work)
        config = work / "aso" / "aso.toml"
        if case.toml:
            # the case's sites replace the three example ones
            text = config.read_text()
            text = text[:text.index("[sites.")] + case.toml.replace(SITES_URI, (work / "aso" / "sites").as_uri())
            config.write_text(text)
        write_proxies(work, [work / "aso" / "proxies"], args.users)

        console.print(f"[{case.name}, {tree}] injecting {args.files} requests for {args.users} users …")
        to_publish = 0
        start = time.perf_counter()
        step = args.inject_batch
        for i in range(0, args.files, step):
            path = work / "inject.json"
            requests = make_requests(min(i + step, args.files), args.users, case.pairs, args.publish_every, i)
            to_publish += sum(r["publish"] for r in requests)
            path.write_text(json.dumps(requests))
            subprocess.run(aso_command("--config", str(config), "inject", str(path)), check=True, capture_output=True,
                           env=env, cwd=work)
            if to_publish:
                meta = work / "publication.json"
                meta.write_text(json.dumps(publication_inputs(requests, args.users if i == 0 else 0)))
                subprocess.run([sys.executable, "-c", _PUBLICATION_SETUP, str(config), str(meta)], check=True,
                               capture_output=True, env=env, cwd=work)
            del requests
        inject_seconds = time.perf_counter() - start

        stats = {c: ComponentStats() for c in COMPONENTS}
        start = time.perf_counter()
        done = published = 0
        aso = work / "aso"
        for round_no in range(200):
            out = run_pass(config, "transfer", stats["transfer"], aso, tree)
            stats["transfer"].files += files_handled("transfer", out)
            time.sleep(0.3)  # the simulated FTS finishes a round's files within its next scheduling round
            out = run_pass(config, "monitor", stats["monitor"], aso, tree)
            stats["monitor"].files += files_handled("monitor", out)
            out = run_pass(config, "reporter", stats["reporter"], aso, tree)
            stats["reporter"].files += files_handled("reporter", out)
            done += out.get("states", {}).get("DONE", 0)
            out = run_pass(config, "publisher", stats["publisher"], aso, tree)
            stats["publisher"].files += files_handled("publisher", out)
            published += out.get("published", 0) + out.get("already_in_catalog", 0)
            out = run_pass(config, "retry-manager", stats["retry-manager"], aso, tree)
            console.print(f"  round {round_no + 1}: submitted {stats['transfer'].files}, reported "
                          f"{stats['reporter'].files}, published {published}/{to_publish}")
            if stats["reporter"].files >= args.files and stats["publisher"].files >= to_publish:
                break
        total = time.perf_counter() - start
        deleg = delegation_timing(work, args.delegation_users) if args.delegation_users and with_delegation else None
    finally:
        for s in services:
            s.stop()

    backend = "REST (aso server over SQLite)" if args.rest else "local PostgreSQL" if args.postgres else "local SQLite"
    if args.state_url:
        backend += " (given database)"
    rows = []
    for name, s in stats.items():
        rows.append({"component": f"aso {name}", "passes": s.passes, "seconds": round(s.seconds, 2),
                     "cpu": round(s.cpu, 2), "files": s.files,
                     "files/s": round(s.files / s.seconds) if s.seconds and s.files else 0,
                     "peak MB": round(s.peak_rss_mb, 1)})
    return {"case": case.name, "code": str(tree), "files": args.files, "users": args.users, "backend": backend,
            "inject_seconds": round(inject_seconds, 2), "end_to_end_seconds": round(total, 2), "done": done,
            "to_publish": to_publish, "published": published,
            "first_delegation_seconds_per_user": round(deleg, 3) if deleg else None, "components": rows,
            "mode": "aso fts-server --simulate (FTS bookkeeping real, no data moved)"}


def files_handled(component: str, summary: dict) -> int:
    """The files one pass of ``component`` handled, from its ``--json`` summary: submitted,
    handed over by the monitor, reported, or published (or found in the catalog, failed,
    sent to retry)."""
    if component == "transfer":
        return int(summary.get("files", 0))
    if component == "monitor":
        return int(sum(summary.get("handed_over", {}).values()))
    if component == "reporter":
        return int(sum(summary.get("states", {}).values()))
    if component == "publisher":
        return int(sum(summary.get(k, 0) for k in ("published", "already_in_catalog", "failed", "retry")))
    return 0


def compare(args, fts_port: int, base: Path) -> list[dict]:
    """This checkout and ``args.baseline`` alternating, ``args.repeat`` times each."""
    runs = []
    for n in range(args.repeat):
        for label, tree in (("baseline", args.baseline.resolve()), ("this", ROOT)):
            summary = run_case(args, Case("plain"), base / f"{label}{n}", fts_port, with_delegation=False, tree=tree)
            summary["label"] = label
            runs.append(summary)
    return runs


def _median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def comparison(runs: list[dict]) -> dict:
    """Per component and end to end: the median wall and CPU seconds of each code, and
    baseline / this."""
    def value(label: str, component: str | None, key: str) -> float:
        mine = [r for r in runs if r["label"] == label]
        if component is None:
            if key == "seconds":
                return _median([r["end_to_end_seconds"] for r in mine])
            return _median([sum(c[key] for c in r["components"]) for r in mine])
        return _median([next(c[key] for c in r["components"] if c["component"] == component) for r in mine])

    rows = []
    for component in [c["component"] for c in runs[0]["components"]] + [None]:
        row = {"component": component or "end to end"}
        for key in ("seconds", "cpu"):
            b, t = value("baseline", component, key), value("this", component, key)
            row.update({f"baseline {key}": round(b, 2), f"this {key}": round(t, 2),
                        f"{key} ratio": round(b / t, 2) if t else None})
        rows.append(row)
    return {"files": runs[0]["files"], "users": runs[0]["users"], "backend": runs[0]["backend"],
            "baseline": next(r["code"] for r in runs if r["label"] == "baseline"), "repeat": len(runs) // 2,
            "rows": rows, "runs": runs}


def print_comparison(result: dict) -> None:
    table = Table(title=f"aso pipeline: {result['files']} files, {result['users']} users, {result['backend']}; "
                        f"median of {result['repeat']} alternating run(s) each; baseline {result['baseline']}")
    columns = ("baseline s", "this s", "speed-up", "baseline CPU s", "this CPU s", "CPU ratio")
    table.add_column("component")
    for col in columns:
        table.add_column(col, justify="right")
    for r in result["rows"]:
        table.add_row(r["component"], f"{r['baseline seconds']:.2f}", f"{r['this seconds']:.2f}",
                      f"{r['seconds ratio']:.2f}x", f"{r['baseline cpu']:.2f}", f"{r['this cpu']:.2f}",
                      f"{r['cpu ratio']:.2f}x")
    Console(width=160).print(table)
    for r in result["runs"]:
        parts = ", ".join(f"{c['component'][4:]} {c['seconds']:.1f}" for c in r["components"])
        console.print(f"  {r['label']}: end to end {r['end_to_end_seconds']:.1f} s ({parts}); DONE {r['done']}/"
                      f"{r['files']}, published {r['published']}/{r['to_publish']}")


def print_summary(args, summary: dict) -> None:
    table = Table(title=f"aso pipeline, {summary['case']}: {summary['files']} files, {summary['users']} users, "
                        f"{summary['backend']}; FTS: aso fts-server --simulate (no data moved)")
    for col in ("component", "passes", "seconds", "cpu", "files", "files/s", "peak MB"):
        table.add_column(col, justify="left" if col == "component" else "right")
    for r in summary["components"]:
        table.add_row(*(str(r[c]) for c in ("component", "passes", "seconds", "cpu", "files", "files/s", "peak MB")))
    total, inject = summary["end_to_end_seconds"], summary["inject_seconds"]
    cpu = sum(r["cpu"] for r in summary["components"])
    table.add_row("end to end", "", f"{total:.2f}", f"{cpu:.2f}", str(summary["files"]), f"{summary['files'] / total:.0f}", "")
    table.add_row("(inject, not in the total)", "", f"{inject:.2f}", "", str(summary["files"]),
                  f"{summary['files'] / inject:.0f}", "")
    table.add_row("DONE at the end", "", "", "", str(summary["done"]), "", "")
    table.add_row("published at the end", "", "", "", f"{summary['published']}/{summary['to_publish']}", "", "")
    deleg = summary["first_delegation_seconds_per_user"]
    if deleg is not None:
        table.add_row(f"first-time delegation, per user ({args.delegation_users} users, HTTPS)", "", f"{deleg:.3f}", "", "",
                      "", "")
    Console(width=160).print(table)


if __name__ == "__main__":
    sys.exit(main())
