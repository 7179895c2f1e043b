"""A long chaos run of the whole pipeline (the suite runs a 40-second one).

    python benchmarks/chaos.py --seconds 600 --users 5 --files-per-user 200 --seed 1
    python benchmarks/chaos.py --runs 5 --seconds 120      # five seeds in a row
    python benchmarks/chaos.py --multihop --seconds 120    # a third of the files over A>B>C only

Every component in its own loop (overlapping cron jobs), SIGKILLed at random instants; the
FTS service and the state server killed (-9) and restarted; whole tasks killed while their
submissions are pending; then a drain and the invariants of tests/pipeline/chaos.py: no row
lost or stuck, no file in two FTS jobs beyond its retries, every DONE destination equal to
its source and in the catalog exactly once, no KILLED row with a destination file.
Prints one table row per run and exits 1 if any invariant broke.
"""

from __future__ import annotations

import os
import sys

# benchmarks/copy.py shadows the standard library's ``copy``: keep this folder off the path,
# and put the repository root on it (the chaos driver lives with the tests).
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tests.pipeline.chaos import ChaosSettings, run_chaos
from tests.pki import build_pki


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--users", type=int, default=5)
    parser.add_argument("--files-per-user", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--fts-restarts", type=int, default=0, help="default: one a minute, at least 2")
    parser.add_argument("--state-restarts", type=int, default=0, help="default: one a minute, at least 2")
    parser.add_argument("--keep", action="store_true", help="keep each run's folder")
    parser.add_argument("--push", action="store_true",
                        help="completion messages over RabbitMQ's STOMP and aso receiver among the components")
    parser.add_argument("--multihop", action="store_true",
                        help="only the links XX -> YY and YY -> ZZ: the XX -> ZZ files go as two-hop multihop jobs")
    args = parser.parse_args()
    console = Console(width=160)
    per_minute = max(2, int(args.seconds // 60))
    table = Table(title="chaos runs")
    for column in ("seed", "files", "seconds", "passes", "SIGKILLs", "FTS restarts", "state restarts",
                   "killed tasks", "drain rounds", "final states", "received (push)", "problems"):
        table.add_column(column)
    failed = 0
    for run in range(args.runs):
        seed = args.seed + run
        root = Path(tempfile.mkdtemp(prefix=f"aso-chaos-{seed}-"))
        pki = build_pki(root / "pki")
        settings = ChaosSettings(seed=seed, users=args.users, files_per_user=args.files_per_user,
                                 seconds=args.seconds, fts_restarts=args.fts_restarts or per_minute,
                                 state_restarts=args.state_restarts or per_minute, task_kills=max(2, args.users // 2),
                                 drain_rounds=200, push=args.push, multihop=args.multihop)
        with console.status(f"chaos run {run + 1}/{args.runs} (seed {seed}, {args.seconds:.0f} s of chaos)"):
            report = run_chaos(pki, root / "run", settings)
        failed += bool(report.problems)
        table.add_row(str(seed), str(report.files), f"{report.seconds:.0f}", str(sum(report.passes.values())),
                      str(report.sigkills), str(report.fts_restarts), str(report.state_restarts),
                      str(len(report.killed_tasks)), str(report.drain_rounds),
                      ", ".join(f"{k} {v}" for k, v in sorted(report.states.items())),
                      str(report.received) if args.push else "-", str(len(report.problems)))
        for problem in report.problems[:20]:
            console.print(f"[red]seed {seed}: {problem}")
        if not args.keep and not report.problems:
            import shutil

            shutil.rmtree(root, ignore_errors=True)
        else:
            console.print(f"run folder kept: {root}")
    console.print(table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
