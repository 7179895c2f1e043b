"""Rows per second of the state backends for inject, acquire and bulk update.

    python benchmarks/state_backend.py [--sizes 10000 100000] [--postgres URL]

Backends: local SQLite, REST (a real ``aso server`` process over SQLite on loopback) and
local PostgreSQL (``--postgres`` or ``$ASO_TEST_POSTGRES_URL``; the database is wiped).
Each size runs on a fresh database. Prints one table; the last column compares the time
per row at the largest size with the smallest (1.0 = linear).
"""

from __future__ import annotations

import os
import sys

# benchmarks/copy.py is named like the standard library's ``copy`` module, which dataclasses
# and others import: keep this folder off the import path.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aso.state import TransferUpdate, open_backend  # noqa: E402
from aso.state.store import Store  # noqa: E402
from tests.state.servers import start_state_server  # noqa: E402

OPS = ("inject", "acquire", "update")


def requests_for(n: int, users: int = 100) -> list[dict]:
    return [
        {
            "username": f"user{i % users}",
            "taskname": f"task{i % users}",
            "source": "T2_XX_Source",
            "destination": "T2_YY_Dest",
            "source_lfn": f"/store/temp/user/u{i % users}/bench/file_{i}.root",
            "destination_lfn": f"/store/user/u{i % users}/bench/file_{i}.root",
            "filesize": 1_000_000,
            "checksum": "0a1b2c3d",
            "publish": i % 2,
            "job_id": str(i),
        }
        for i in range(n)
    ]


def measure(backend, n: int) -> dict[str, float]:
    reqs = requests_for(n)
    t0 = time.perf_counter()
    backend.inject(reqs)
    t1 = time.perf_counter()
    acquired = backend.acquire_transfers(backend.active_users(), n)
    t2 = time.perf_counter()
    assert acquired == n, (acquired, n)
    rows = backend.acquired_transfers(limit=n)
    updates = [TransferUpdate(r["tm_id"], "SUBMITTED", fts_id=f"job-{k // 50}", fts_instance="https://fts:8446") for k, r in enumerate(rows)]
    t3 = time.perf_counter()
    result = backend.update_transfers(updates)
    t4 = time.perf_counter()
    assert len(result.updated) == n
    return {"inject": n / (t1 - t0), "acquire": n / (t2 - t1), "update": n / (t4 - t3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--postgres", default=os.environ.get("ASO_TEST_POSTGRES_URL"))
    args = parser.parse_args()
    console = Console()
    results: dict[tuple[str, int], dict[str, float]] = {}
    kinds = ["local SQLite", "REST (SQLite)"] + (["local PostgreSQL"] if args.postgres else [])
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            for n in args.sizes:
                work = Path(tmp) / f"{kind.replace(' ', '-').replace('(', '').replace(')', '')}-{n}"
                work.mkdir()
                server = None
                if kind == "local PostgreSQL":
                    Store(args.postgres).drop_all()
                    backend = open_backend(args.postgres, worker="bench")
                elif kind == "REST (SQLite)":
                    server, url = start_state_server(work)
                    backend = open_backend(url, worker="bench", token="service-token", instance="test")
                else:
                    backend = open_backend(f"sqlite:///{work / 'state.db'}", worker="bench")
                with console.status(f"{kind}, {n:,} rows"):
                    results[(kind, n)] = measure(backend, n)
                backend.close()
                if server:
                    server.stop()
    small, large = min(args.sizes), max(args.sizes)
    table = Table(title="state backend: rows per second (higher is better)")
    table.add_column("backend")
    table.add_column("rows", justify="right")
    for op in OPS:
        table.add_column(op, justify="right")
    table.add_column(f"time/row {large // 1000}k vs {small // 1000}k (inject, acquire, update)", justify="right")
    for kind in kinds:
        for n in args.sizes:
            r = results[(kind, n)]
            ratio = ""
            if n == large and large != small:
                s = results[(kind, small)]
                ratio = ", ".join(f"{s[op] / r[op]:.2f}x" for op in OPS)
            table.add_row(kind, f"{n:,}", *[f"{r[op]:,.0f}" for op in OPS], ratio)
    console.print(table)
    console.print("targets: local bulk update >= 20,000 rows/s; REST >= 5,000 rows/s; time per row at 100k within 1.3x of 10k")


if __name__ == "__main__":
    main()
