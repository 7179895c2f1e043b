"""How many Transfer API requests the globus tool's bulk status costs, and its time per task,
against the ``responses`` stand-in of Globus the tests use (no network; the real service's
latency is not in these numbers, its request count is).

    python benchmarks/globus_requests.py --tasks 500 --files 50

Prints one row per case: ACTIVE tasks (task documents only) and ended tasks (plus their
successful transfers, 1000 a page as Globus pages them by default).
"""

from __future__ import annotations

import os
import sys

# benchmarks/copy.py shadows the standard library's ``copy``: keep this folder off the path
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse
import tempfile
import time
from pathlib import Path

import responses
from rich.console import Console
from rich.table import Table

from aso.transfertools import JobOptions, Transfer
from aso.transfertools.globus import (
    CollectionMap,
    GlobusContext,
    GlobusSettings,
    GlobusSite,
    GlobusTool,
)
from aso.validate import lfn_id
from tests.transfertools.globus_fake import AUTH, TRANSFER, FakeGlobus

SRC, DST = "0b7a2f3e-5c51-4b6e-9d1e-3c0f6f1a2b01", "6d2e1c4b-8a3f-4e7d-b2c9-1f0e9d8c7b02"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--files", type=int, default=50, help="files per task")
    args = parser.parse_args()
    table = Table("case", "tasks", "files", "requests", "requests/task", "ms/task")
    with tempfile.TemporaryDirectory() as tmp, responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        secret = Path(tmp) / "secret"
        secret.write_text("s")
        secret.chmod(0o600)
        fake = FakeGlobus(rsps, page_size=1000)
        cmap = CollectionMap([GlobusSite("A", "https://a.example", SRC), GlobusSite("B", "https://b.example", DST)])
        tool = GlobusTool("globus+" + TRANSFER, GlobusContext(GlobusSettings("app", str(secret), AUTH), cmap))
        ids = []
        for t in range(args.tasks):
            chunk = [Transfer(lfn_id(f"/store/t{t}/f{i}"), f"https://a.example/store/t{t}/f{i}",
                              f"https://b.example/store/user/t{t}/f{i}") for i in range(args.files)]
            ids.append(tool.submit(chunk, JobOptions(), f"bench{t}"))
        for case in ("ACTIVE", "SUCCEEDED"):
            if case == "SUCCEEDED":
                for task_id in ids:
                    fake.finish(task_id)
            before = len(rsps.calls)
            start = time.perf_counter()
            results = tool.bulk_query(ids)
            elapsed = time.perf_counter() - start
            assert len(results) == args.tasks
            requests = len(rsps.calls) - before
            table.add_row(case, str(args.tasks), str(sum(len(r.files) for r in results.values())), str(requests),
                          f"{requests / args.tasks:.2f}", f"{1000 * elapsed / args.tasks:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
