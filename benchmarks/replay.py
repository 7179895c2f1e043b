"""One component's pass replayed from a snapshot: to compare two checkouts on the same state,
or to look inside one pass with a profiler, without running the whole pipeline each time.

    python benchmarks/replay.py setup --files 100000 --users 1000      # inject once, keep a snapshot
    python benchmarks/replay.py run transfer --repeat 3                 # the transfer pass, three times
    python benchmarks/replay.py setup --baseline /work/baseline        # this checkout's case and another's
    python benchmarks/replay.py run transfer --baseline /work/baseline --repeat 3   # the two alternating
    python benchmarks/replay.py run monitor                             # from what the last transfer pass left
    python benchmarks/replay.py run transfer --wrap "perf record -F 499 -o /tmp/perf.data --"
    python benchmarks/replay.py run transfer --wrap "strace -f -c -o /tmp/strace.txt"
    python benchmarks/replay.py run transfer --wrap "py-spy record --gil --format raw -o /tmp/transfer.stacks --"
    python benchmarks/replay.py writes --repeat 3                       # the transfer pass's state writes alone

``setup`` builds the pipeline benchmark's case (``benchmarks/pipeline.py``: the same requests,
proxies, tasks and publication metadata, ``acquire_limit`` 100,000) in ``--workdir`` and keeps
a copy of it as the snapshot of the transfer pass. ``run COMPONENT`` puts that snapshot back,
starts ``aso fts-server --simulate`` on the port the configuration names, runs one pass of
the component as cron would (``--json``), and prints its wall time, its user and system CPU,
its voluntary context switches ("switches"), its peak resident memory and the simulated FTS service's
CPU during the pass. After a pass of this checkout the folder, FTS database included, is
kept as the snapshot of the next component (transfer, monitor, reporter, publisher, retry
manager), so each pass can be replayed on the state the previous one left. With
``--baseline PATH``, ``setup`` also builds the case with that checkout's own code (its
configuration and schema may differ) and ``run`` alternates the two, each on its own
snapshots.

``writes`` makes the transfer pass's calls to the state backend alone, in one thread, on the
transfer snapshot of this checkout: the acquisition, then for each group of
``--users-per-write`` users (the pass's group commits hold a few) the users' reads of their
acquired rows, one write of their submission ids (50 rows a job) and one of their SUBMITTED
rows. It says how much of the pass is the database's work when nothing competes with it.

A pass moves by 10% or more between identical runs on a shared 2-core machine: compare
checkouts in alternating runs (``--baseline``, ``--repeat``) and read the medians.
"""

from __future__ import annotations

import os
import sys

# this folder holds copy.py, named like the standard library's module: keep it off the path
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import json
import resource
import shlex
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.pipeline import (  # noqa: E402
    _PUBLICATION_SETUP,
    _WITH_HWM,
    LINKS,
    files_handled,
    make_requests,
    publication_inputs,
    start_simulating_fts,
    tree_env,
    write_proxies,
)
from tests.procs import aso_command, free_port  # noqa: E402

console = Console(stderr=True)
#: each component and the one cron runs after it
NEXT = {"transfer": "monitor", "monitor": "reporter", "reporter": "publisher", "publisher": "retry-manager"}
COMPONENTS = (*NEXT, "retry-manager")


@dataclass
class PassRun:
    """What one replayed pass cost."""

    code: str
    component: str
    seconds: float
    user_cpu: float
    system_cpu: float
    voluntary_switches: int
    peak_mb: float
    fts_cpu: float
    files: int

    def row(self) -> list[str]:
        return [self.code, f"{self.seconds:.2f}", f"{self.user_cpu:.2f}", f"{self.system_cpu:.2f}",
                f"{self.voluntary_switches}", f"{self.peak_mb:.0f}", f"{self.fts_cpu:.2f}", f"{self.files}"]


def _snapshot(base: Path, component: str) -> Path:
    return base / "snapshots" / component


def _live(base: Path) -> Path:
    """Where a replay runs: always the same path, since the configuration and the sites'
    URLs name it."""
    return base / "live"


def setup(base: Path, tree: Path, files: int, users: int, inject_batch: int, publish_every: int) -> None:
    """The case set up by the code at ``tree`` (its own ``aso init``, schema and injection:
    another checkout may not read this one's configuration or database) in ``base``."""
    if base.exists():
        shutil.rmtree(base)
    work = _live(base)
    work.mkdir(parents=True)
    port = free_port()
    env = tree_env(tree)
    subprocess.run(aso_command("init", str(work / "aso"), "--fts", f"http://127.0.0.1:{port}",
                               "--set", "transfer.acquire_limit=100000", "--set", "retry_manager.stuck_after=36000"),
                   check=True, capture_output=True, env=env, cwd=work)
    write_proxies(work, [work / "aso" / "proxies"], users)
    config = work / "aso" / "aso.toml"
    start = time.perf_counter()
    for i in range(0, files, inject_batch):
        requests = make_requests(min(i + inject_batch, files), users, LINKS, publish_every, i)
        (work / "inject.json").write_text(json.dumps(requests))
        subprocess.run(aso_command("--config", str(config), "inject", str(work / "inject.json")), check=True,
                       capture_output=True, env=env, cwd=work)
        if publish_every:
            (work / "publication.json").write_text(json.dumps(publication_inputs(requests, users if i == 0 else 0)))
            subprocess.run([sys.executable, "-c", _PUBLICATION_SETUP, str(config), str(work / "publication.json")],
                           check=True, capture_output=True, env=env, cwd=work)
    (base / "replay.json").write_text(json.dumps({"fts_port": port, "files": files, "users": users}))
    _keep(base, "transfer")
    console.print(f"{tree}: {files} files of {users} users injected in {time.perf_counter() - start:.1f} s; "
                  f"snapshot of the transfer pass in {_snapshot(base, 'transfer')}")


def _keep(base: Path, component: str) -> None:
    target = _snapshot(base, component)
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(_live(base), target, symlinks=True)


def _restore(base: Path, component: str) -> None:
    source = _snapshot(base, component)
    if not source.is_dir():
        raise SystemExit(f"replay: no snapshot for {component} in {base} (run setup, then the passes before it)")
    shutil.rmtree(_live(base), ignore_errors=True)
    shutil.copytree(source, _live(base), symlinks=True)


def _process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def replay(base: Path, component: str, tree: Path, code: str, wrap: list[str], keep_next: bool) -> PassRun:
    """One pass of ``component`` with the aso code at ``tree``, from its snapshot."""
    settings = json.loads((base / "replay.json").read_text())
    _restore(base, component)
    work = _live(base)
    fts = start_simulating_fts(work, settings["fts_port"])
    try:
        hwm = work / ".hwm"
        command = [*wrap, sys.executable, "-c", _WITH_HWM, "--config", str(work / "aso" / "aso.toml"),
                   "--log-level", "WARNING", component, "--json"]
        fts_before = _process_cpu(fts.proc.pid)
        # the children reaped between these two readings: the pass (or its wrapper, perf or
        # strace, with the pass under it); the FTS service is reaped only once stopped
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.Popen(command, env={**tree_env(tree), "ASO_BENCH_HWM": str(hwm)}, cwd=work / "aso",
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = proc.communicate()
        seconds = time.perf_counter() - start
        fts_cpu = _process_cpu(fts.proc.pid) - fts_before
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise SystemExit(f"replay: aso {component} exited {proc.returncode}: {err.decode()[-2000:]}")
        if keep_next and component in NEXT:
            time.sleep(0.5)  # the simulated FTS finishes the submitted files in its next rounds
    finally:
        fts.stop()
    if keep_next and component in NEXT:
        _keep(base, NEXT[component])
    text = out.decode()
    summary = json.JSONDecoder().raw_decode(text[text.find("{"):])[0] if "{" in text else {}
    return PassRun(code, component, seconds, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime,
                   after.ru_nvcsw - before.ru_nvcsw, int(hwm.read_text()) / 1024 if hwm.exists() else 0.0, fts_cpu,
                   files_handled(component, summary))


@dataclass
class WritesRun:
    """The state backend's share of a transfer pass, in seconds per kind of call."""

    acquire: float
    read: float
    sids: float
    submitted: float
    rows: int

    def row(self) -> list[str]:
        return [f"{self.acquire:.2f}", f"{self.read:.2f}", f"{self.sids:.2f}", f"{self.submitted:.2f}",
                f"{self.acquire + self.read + self.sids + self.submitted:.2f}", f"{self.rows}"]


def replay_writes(base: Path, users_per_write: int, job_files: int = 50) -> WritesRun:
    """The transfer pass's state-backend calls, without FTS, sandboxes or threads."""
    import uuid

    from aso.components.transfer import PAGE_ROWS
    from aso.config import load_config
    from aso.state import TransferUpdate
    from aso.state.factory import backend_from_config

    _restore(base, "transfer")
    config = load_config(_live(base) / "aso" / "aso.toml")
    backend = backend_from_config(config)
    try:
        start = time.perf_counter()
        users = backend.active_users()
        rows_taken = int(backend.acquire_transfers(users, config.transfer.acquire_limit))
        acquire = time.perf_counter() - start
        read = sids = submitted = 0.0
        for k in range(0, len(users), users_per_write):
            start = time.perf_counter()
            # a page of each user's rows, as the pass reads them
            rows = [r for user in users[k:k + users_per_write] for r in backend.acquired_transfers(user, PAGE_ROWS)]
            read += time.perf_counter() - start
            by_row: dict[str, str] = {}
            for i in range(0, len(rows), job_files):
                sid = uuid.uuid4().hex
                by_row.update((r["tm_id"], sid) for r in rows[i:i + job_files])
            start = time.perf_counter()
            backend.set_submission_ids(by_row)
            sids += time.perf_counter() - start
            updates = [TransferUpdate(id=r["tm_id"], state="SUBMITTED", fts_id=f"job-{by_row[r['tm_id']]}",
                                      fts_instance="http://127.0.0.1:8446", expect_state="ACQUIRED") for r in rows]
            start = time.perf_counter()
            backend.update_transfers(updates)
            submitted += time.perf_counter() - start
    finally:
        backend.close()
    return WritesRun(acquire, read, sids, submitted, rows_taken)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "aso-replay",
                    help="where the snapshots and the replayed folder live (default $TMPDIR/aso-replay)")
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("setup", help="inject the pipeline benchmark's case and keep the transfer pass's snapshot")
    s.add_argument("--files", type=int, default=100000)
    s.add_argument("--users", type=int, default=1000)
    s.add_argument("--inject-batch", type=int, default=50000)
    s.add_argument("--publish-every", type=int, default=2, help="flag every N-th file for publication (0: none)")
    s.add_argument("--baseline", type=Path, default=None, metavar="PATH",
                   help="also set the case up with the aso code of the checkout at PATH, for `run --baseline`")
    r = sub.add_parser("run", help="replay one component's pass from its snapshot")
    r.add_argument("component", choices=COMPONENTS)
    r.add_argument("--repeat", type=int, default=1, help="passes of each checkout (alternating with --baseline)")
    r.add_argument("--baseline", type=Path, default=None, metavar="PATH",
                   help="also replay with the aso code of the checkout at PATH, alternating")
    r.add_argument("--wrap", default="", metavar="COMMAND",
                   help="run the pass under this command prefix (a profiler, strace), quoted as one argument")
    r.add_argument("--json", action="store_true")
    w = sub.add_parser("writes", help="the transfer pass's state-backend calls alone, in one thread")
    w.add_argument("--repeat", type=int, default=1)
    w.add_argument("--users-per-write", type=int, default=4, help="users whose rows one write holds")
    w.add_argument("--json", action="store_true")
    args = ap.parse_args()
    base = args.workdir.resolve()
    if args.command == "writes":
        return _writes(base / "this", args.repeat, args.users_per_write, args.json)
    if args.baseline and not (args.baseline / "aso" / "cli").is_dir():
        ap.error(f"--baseline: {args.baseline} is not an aso checkout (no aso/cli in it)")
    # each checkout replays its own case: this one's in WORKDIR/this, the baseline's in WORKDIR/baseline
    trees = [("this", ROOT)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
    if args.command == "setup":
        for code, tree in trees:
            setup(base / code, tree, args.files, args.users, args.inject_batch, args.publish_every)
        return 0
    for code, _ in trees:
        if not (base / code / "replay.json").exists():
            ap.error(f"no replay of {code} set up in {base}: run `benchmarks/replay.py setup"
                     f"{' --baseline PATH' if code == 'baseline' else ''}` first")
    runs: list[PassRun] = []
    for i in range(max(1, args.repeat)):
        for code, tree in trees:
            run = replay(base / code, args.component, tree, code, shlex.split(args.wrap), keep_next=True)
            runs.append(run)
            console.print(f"  {i + 1}: {code}: {run.seconds:.2f} s")
    medians = {code: statistics.median(r.seconds for r in runs if r.code == code) for code, _ in trees}
    if args.json:
        print(json.dumps({"component": args.component, "runs": [asdict(r) for r in runs], "median_seconds": medians},
                         indent=2))
        return 0
    table = Table(title=f"aso {args.component}, replayed from {base}/*/snapshots/{args.component}")
    for name in ("code", "wall s", "user s", "sys s", "switches", "peak MB", "FTS CPU s", "files"):
        table.add_column(name, justify="left" if name == "code" else "right", no_wrap=True)
    for run in runs:
        table.add_row(*run.row())
    console.print(table)
    line = ", ".join(f"{code} median {value:.2f} s" for code, value in medians.items())
    if args.baseline:
        line += f"; speed-up {medians['baseline'] / medians['this']:.2f}x"
    console.print(line)
    return 0


def _writes(base: Path, repeat: int, users_per_write: int, as_json: bool) -> int:
    if not (base / "replay.json").exists():
        raise SystemExit(f"replay: nothing set up in {base} (run `benchmarks/replay.py setup` first)")
    runs = [replay_writes(base, max(1, users_per_write)) for _ in range(max(1, repeat))]
    if as_json:
        print(json.dumps({"users_per_write": users_per_write, "runs": [asdict(r) for r in runs]}, indent=2))
        return 0
    table = Table(title=f"the transfer pass's state-backend calls alone, {users_per_write} user(s) a write, "
                        f"from {base}/snapshots/transfer")
    for name in ("acquire s", "read s", "sids s", "SUBMITTED s", "total s", "rows"):
        table.add_column(name, justify="right", no_wrap=True)
    for run in runs:
        table.add_row(*run.row())
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
