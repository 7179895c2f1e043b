"""What several hosts cost the state store, at 100,000 rows: the monitor's per-pass look for
jobs taken over from other hosts (one grouped query of the worker's SUBMITTED rows, then the
rows of the jobs no entry follows), a plain heartbeat, the takeover of a dead worker holding
every row (one transaction), and recording the submission ids of 10,000 rows.

    python benchmarks/takeover.py [--rows 100000] [--users 100] [--repeat 3] [--db URL]

``--db`` takes a PostgreSQL URL (its tables are dropped first!); the default is a SQLite
file in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)  # benchmarks/copy.py would shadow the standard library's copy
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from sqlalchemy import text  # noqa: E402

from aso.state.records import Heartbeat  # noqa: E402
from aso.state.store import Store  # noqa: E402


def fill(store: Store, rows: int, users: int) -> None:
    """``rows`` SUBMITTED rows of worker 'dead', in 16 FTS jobs per user (the first hex
    digit of the row id): at 100,000 rows and 100 users, 1,600 jobs of about 60 files."""
    reqs = [{"username": f"user{i % users}", "taskname": f"task_user{i % users}", "source": "T2_A",
             "destination": "T2_B", "source_lfn": f"/store/temp/user/user{i % users}/t/f_{i}.root",
             "destination_lfn": f"/store/user/user{i % users}/t/f_{i}.root", "filesize": 1000} for i in range(rows)]
    for i in range(0, rows, 10000):
        store.inject(reqs[i:i + 10000])
    # the benchmark's own set-up, one statement: jobs of per_job rows of one user each
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE filetransfersdb SET tm_transfer_state = 5, tm_aso_worker = 'dead', "
                          "tm_fts_instance = 'https://fts:8446', tm_fts_id = tm_username || '-' || "
                          "substr(tm_id, 1, 1)"))


def timed(fn, repeat: int) -> tuple[float, float, object]:
    runs, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        runs.append(time.perf_counter() - start)
    return min(runs), statistics.median(runs), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--db", default="")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="aso-bench-hosts-")
    url = args.db or f"sqlite:///{folder}/state.db"
    store = Store(url)
    store.drop_all()
    store.close()
    store = Store(url)
    fill(store, args.rows, args.users)
    out = []
    best, med, jobs = timed(lambda: store.submitted_jobs(worker="dead"), args.repeat)
    out.append(("monitor: SUBMITTED jobs of the worker (every pass)", best, med, f"{len(jobs)} jobs"))
    some = [j for _, j, _ in jobs[:20]]
    best, med, rows = timed(lambda: store.transfers_of_jobs(some, worker="dead"), args.repeat)
    out.append(("monitor: rows of 20 jobs no entry follows", best, med, f"{len(rows)} rows"))
    beat = Heartbeat("bench.example", "transfer", 1, time.time(), 600)
    best, med, _ = timed(lambda: store.heartbeat(beat, worker="live"), args.repeat)
    out.append(("heartbeat (nobody to take over)", best, med, ""))
    store.heartbeat(Heartbeat("dead.example", "transfer", 2, time.time(), 1), worker="dead")
    time.sleep(1.1)
    other = Heartbeat("bench2.example", "transfer", 3, time.time(), 1)
    store.heartbeat(Heartbeat("bench3.example", "transfer", 4, time.time(), 1), worker="live2")
    best, med, membership = timed(lambda: store.heartbeat(other, worker="live"), 1)
    taken = membership.taken_over[0]
    out.append(("heartbeat taking over a dead worker (2 live)", best, med, f"{taken.rows} rows, {taken.users} users"))
    with store.engine.begin() as conn:  # set-up: the live worker's rows back in ACQUIRED
        conn.execute(text("UPDATE filetransfersdb SET tm_transfer_state = 1"))
    ids = [r["tm_id"] for r in store.acquired_transfers(limit=10000, worker="live")]
    best, med, n = timed(lambda: store.set_submission_ids({i: "sid-bench" for i in ids}, worker="live"), args.repeat)
    out.append((f"record the sids of {len(ids)} rows", best, med, f"{n} rows"))
    store.close()

    table = Table(title=f"several hosts, {args.rows} rows, {args.users} users ({url.split(':')[0]})")
    for name in ("operation", "best s", "median s", "result"):
        table.add_column(name, justify="left" if name in ("operation", "result") else "right")
    for name, b, m, r in out:
        table.add_row(name, f"{b:.3f}", f"{m:.3f}", str(r))
    Console().print(table)


if __name__ == "__main__":
    main()
