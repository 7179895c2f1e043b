"""What the request-type split costs the transfer pass: its two acquisition queries
(active users, acquisition) over 100,000 NEW transfer rows, unfiltered as before stage-ins
existed, filtered ('transfer'), and filtered with as many NEW stage-in rows of the same users
beside them; and the stager's own queries over that table.

    python benchmarks/request_type.py [--rows 100000] [--users 100] [--repeat 3] [--db URL]

``--db`` takes a PostgreSQL URL (its tables are dropped first!); the default is a SQLite
file in a temporary folder. Each acquisition is undone (released back to NEW) between runs.
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

from aso.state.store import Store  # noqa: E402

WORKER = "bench"


def requests(users: int, rows: int, stagein: bool) -> list[dict]:
    out = []
    for i in range(rows):
        user = f"user{i % users}"
        if stagein:
            lfn = f"/store/user/{user}/tape/f_{i}.root"
            out.append({"username": user, "taskname": f"task_{user}_s", "source": "T1_Tape", "destination": "T1_Tape",
                        "source_lfn": lfn, "destination_lfn": lfn, "filesize": 1000, "type": "stagein"})
        else:
            out.append({"username": user, "taskname": f"task_{user}", "source": "T2_A", "destination": "T2_B",
                        "source_lfn": f"/store/temp/user/{user}/t/f_{i}.root",
                        "destination_lfn": f"/store/user/{user}/t/f_{i}.root", "filesize": 1000})
    return out


def inject(store: Store, reqs: list[dict]) -> None:
    for i in range(0, len(reqs), 10000):
        store.inject(reqs[i:i + 10000])


def timed(fn, repeat: int, undo=None) -> tuple[float, float, object]:
    runs, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        runs.append(time.perf_counter() - start)
        if undo is not None:
            undo()
    return min(runs), statistics.median(runs), result


def measure(store: Store, kind: str | None, repeat: int, limit: int) -> list[tuple[str, float, float, object]]:
    out = []
    best, med, users = timed(lambda: store.active_users(worker=WORKER, request_type=kind), repeat)
    out.append(("active users", best, med, len(users)))

    def undo() -> None:  # one statement: the benchmark's own bookkeeping, not measured
        with store.engine.begin() as conn:
            conn.execute(text("UPDATE filetransfersdb SET tm_transfer_state = 0, tm_aso_worker = NULL "
                              "WHERE tm_transfer_state = 1"))

    best, med, taken = timed(lambda: store.acquire_transfers(users, limit, worker=WORKER, request_type=kind),
                             repeat, undo)
    out.append(("acquire", best, med, int(taken)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100000)
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--limit", type=int, default=10000, help="rows acquired per user ([transfer] acquire_limit)")
    ap.add_argument("--db", default="")
    args = ap.parse_args()
    folder = tempfile.mkdtemp(prefix="aso-bench-rt-")
    url = args.db or f"sqlite:///{folder}/state.db"
    store = Store(url)
    store.drop_all()
    store.close()
    store = Store(url)
    engine = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    table = Table(title=f"request-type split on {engine}: {args.rows} NEW transfer rows over {args.users} users "
                        f"(acquire limit {args.limit} per user), best and median of {args.repeat}")
    for col in ("table", "filter", "query", "best s", "median s", "rows/users"):
        table.add_column(col, justify="left" if col in ("table", "filter", "query") else "right")
    inject(store, requests(args.users, args.rows, stagein=False))
    for kind in (None, "transfer"):
        for query, best, med, n in measure(store, kind, args.repeat, args.limit):
            table.add_row("transfers only", kind or "none (before)", query, f"{best:.3f}", f"{med:.3f}", str(n))
    inject(store, requests(args.users, args.rows, stagein=True))
    for kind in ("transfer", "stagein"):
        for query, best, med, n in measure(store, kind, args.repeat, args.limit):
            table.add_row(f"+ {args.rows} stage-ins", kind, query, f"{best:.3f}", f"{med:.3f}", str(n))
    store.close()
    Console(width=140).print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
