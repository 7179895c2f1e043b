"""Throttled acquisition's allocation on its worst case: 100,000 waiting rows over 1,000
users and 400 links, most groups of one row, every site and link limited.

    python benchmarks/throttle.py [--repeat 5]

Prints the best and median time of ``allocate`` (with and without fair share, site limits
only and sites plus links) and of ``explain``, the status table's reckoning.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)  # benchmarks/copy.py would shadow the standard library's copy
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from aso.topology.throttle import ThrottleLimits, allocate, explain  # noqa: E402
from tests.topology.test_throttle import big_case  # noqa: E402


def timed(fn, repeat: int) -> tuple[float, float]:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return min(runs), statistics.median(runs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    inflight, waiting, limits = big_case()
    sites_only = ThrottleLimits(incoming=limits.incoming, outgoing=limits.outgoing)
    unfair = ThrottleLimits(limits.incoming, limits.outgoing, limits.links, fair_share=False)
    table = Table(title=f"throttle allocation: {sum(waiting.values())} waiting rows in {len(waiting)} groups, "
                        f"{sum(inflight.values())} in flight")
    for col in ("case", "best s", "median s", "rows taken"):
        table.add_column(col, justify="left" if col == "case" else "right")
    for name, lim in (("sites only, fair share", sites_only), ("sites + links, fair share", limits),
                      ("sites + links, oldest first", unfair)):
        best, median = timed(lambda lim=lim: allocate(inflight, waiting, lim, 10000), args.repeat)
        taken = sum(allocate(inflight, waiting, lim, 10000).values())
        table.add_row(name, f"{best:.3f}", f"{median:.3f}", str(taken))
    best, median = timed(lambda: explain(inflight, waiting, limits), args.repeat)
    table.add_row("explain (aso status)", f"{best:.3f}", f"{median:.3f}", "")
    Console(width=120).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
