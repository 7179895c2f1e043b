"""How fast the status page is over a large store.

Fills a store with ``--rows`` transfers (default 1,000,000) in a realistic mix: mostly DONE
over the last 30 days, some FAILED and KILLED, a few thousand NEW/ACQUIRED/SUBMITTED/RETRY;
1000 users, 5000 tasks, 20 sites. Then renders the overview (as an operator and as a user)
and a task page through the Flask app, logged in with a session like a browser, and prints
the server time per page and per overview query (p50/p95).

    python benchmarks/web.py                       # SQLite in a temporary folder
    ASO_TEST_POSTGRES_URL=postgresql+psycopg://... python benchmarks/web.py
    python benchmarks/web.py --sqlite /tmp/web.db  # keep (and reuse) the filled SQLite file

On PostgreSQL it uses its own database, <name>_bench_web, next to the one in the URL (the
test database is dropped and made by tests running meanwhile), and drops it afterwards.
"""

from __future__ import annotations

import os
import sys

# benchmarks/copy.py would shadow the standard library's copy, which dataclasses
# and others import: keep this folder off the import path.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse  # noqa: E402
import hashlib  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, func, insert, select, text  # noqa: E402

from aso.state.auth import BearerTokenAuthenticator  # noqa: E402
from aso.state.schema import transfers  # noqa: E402
from aso.state.server import create_app  # noqa: E402
from aso.state.store import Store  # noqa: E402
from aso.web import queries  # noqa: E402

USERS, TASKS, SITES = 1000, 5000, 20
CHUNK = 20000
REASONS = [
    "TRANSFER [110] globus_ftp_client: the server responded with an error 451",
    "DESTINATION OVERWRITE srm-ifce err: Communication error on send",
    "SOURCE CHECKSUM MISMATCH User defined checksum and source checksum do not match",
    "TRANSFER Operation timed out",
    "DESTINATION MAKE_PARENT Permission denied",
    "Job has been abandoned: FTS no longer knows it",
]
TOKENS = [{"token": "operator-token", "identity": "operator", "role": "operator"},
          {"token": "user-token-0042", "identity": "user0042", "role": "user"}]


def _state_of(i: int, n: int) -> int:
    """Deterministic mix: per million, 2000 NEW, 1000 ACQUIRED, 2000 SUBMITTED, 1000 RETRY,
    30000 FAILED, 2000 KILLED, the rest DONE."""
    k = (i * 7919) % n * 1_000_000 // n  # spread over the rows, whatever their number
    for limit, state in ((2000, 0), (3000, 1), (5000, 5), (6000, 4), (36000, 2), (38000, 7)):
        if k < limit:
            return state
    return 3


def fill(url: str, rows: int) -> float:
    store = Store(url)
    started = time.perf_counter()
    now = int(time.time())
    rnd = random.Random(7)
    sites = [f"T2_XX_Site{s:02d}" for s in range(SITES)]
    batch = []
    with store.engine.begin() as conn:
        for i in range(rows):
            task_no = rnd.randrange(TASKS)
            user = f"user{task_no % USERS:04d}"
            task = f"250101_000000:{user}_crab_task{task_no:04d}"
            state = _state_of(i, rows)
            finished = state in (2, 3, 7)
            end = now - rnd.randrange(30 * 86400) if finished else None
            last = end if finished else now - rnd.randrange(6 * 3600)
            if state == 4:
                last = now - rnd.randrange(2 * 3600)
            src, dst = sites[task_no % SITES], sites[(task_no * 7 + 3) % SITES]
            lfn = f"/store/temp/user/{user}/crab_task{task_no:04d}/out_{i}.root"
            publish = 1 if task_no % 3 else 0
            batch.append({
                "tm_id": hashlib.sha224(lfn.encode()).hexdigest(), "tm_username": user, "tm_taskname": task,
                "tm_source": src, "tm_destination": dst, "tm_source_lfn": lfn,
                "tm_destination_lfn": lfn.replace("/store/temp/user/", "/store/user/"),
                "tm_filesize": rnd.randrange(10**6, 4 * 10**9), "tm_checksum": "0a1b2c3d", "tm_publish": publish,
                "tm_jobid": str(i % 500), "tm_job_retry_count": 0, "tm_type": "output",
                "tm_aso_worker": "bench" if state in (1, 5) else None, "tm_transfer_state": state,
                "tm_publication_state": (3 if state == 3 else 0) if publish else 5,
                "tm_transfer_retry_count": 1 if state in (2, 4) else 0, "tm_publication_retry_count": 0,
                "tm_transfer_max_retry_count": 3, "tm_publication_max_retry_count": 3,
                "tm_transfer_failure_reason": f"{REASONS[i % len(REASONS)]} (job {i % 977})" if state in (2, 4) else None,
                "tm_publication_failure_reason": None,
                "tm_fts_id": f"{i // 50:032x}" if state in (2, 3, 4, 5) else None,
                "tm_fts_instance": "https://fts3-cms.cern.ch:8446" if state in (2, 3, 4, 5) else None,
                "tm_dbs_blockname": None, "tm_block_complete": None, "tm_start_time": last - 3600,
                "tm_last_update": last, "tm_end_time": end, "tm_creation_time": last - 7200, "tm_path": None,
            })
            if len(batch) == CHUNK:
                conn.execute(insert(transfers), batch)
                batch.clear()
        if batch:
            conn.execute(insert(transfers), batch)
    if store.is_sqlite:
        with store.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
    else:
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE filetransfersdb")
    store.close()
    return time.perf_counter() - started


def _login(client, token: str) -> None:
    page = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    answer = client.post("/login", data={"token": token, "csrf": csrf})
    assert answer.status_code == 303, answer.status_code


def _pct(values: list[float]) -> tuple[float, float]:
    values = sorted(values)
    return statistics.median(values) * 1000, values[min(len(values) - 1, int(len(values) * 0.95))] * 1000


def measure(url: str, runs: int) -> list[tuple[str, float, float]]:
    store = Store(url)
    app = create_app(store, BearerTokenAuthenticator(TOKENS))
    operator, user = app.test_client(), app.test_client()
    _login(operator, "operator-token")
    _login(user, "user-token-0042")
    with store.engine.connect() as conn:
        task = conn.execute(select(transfers.c.tm_taskname).where(transfers.c.tm_username == "user0042").limit(1)).scalar()
    results = []
    for label, client, path in (("overview, operator", operator, "/"), ("overview, user", user, "/"),
                                ("task page (1st of 200 rows)", operator, f"/task/{task}"),
                                ("task page, state=DONE", user, f"/task/{task}?state=DONE")):
        client.get(path)  # warm the caches, as a page refreshed every 30 s finds them
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            answer = client.get(path)
            times.append(time.perf_counter() - t0)
            assert answer.status_code == 200, (path, answer.status_code)
        results.append((label, *_pct(times)))
    parts: dict[str, list[float]] = {}
    for _ in range(runs):
        data = queries.overview(store, None, with_health=True)
        for name, seconds in data.timings.items():
            parts.setdefault(name, []).append(seconds)
    results += [(f"  query: {name}", *_pct(values)) for name, values in parts.items()]
    with store.engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(transfers)).scalar()
    store.close()
    return [("rows in store", float(count), float("nan")), *results]


def _postgres_bench_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    base = make_url(url)
    name = f"{base.database}_bench_web"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


def _drop_postgres(url: str) -> None:
    from sqlalchemy.engine import make_url

    bench = make_url(url)
    admin = create_engine(bench.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{bench.database}" WITH (FORCE)'))
    admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--sqlite", help="SQLite file to fill (kept; reused when it holds --rows rows)")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    tables: dict[str, list[tuple[str, float, float]]] = {}
    fills: dict[str, float] = {}

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.sqlite) if args.sqlite else Path(tmp) / "web.db"
        url = f"sqlite:///{path}"
        reuse = False
        if path.exists():
            with create_engine(url).connect() as conn:
                reuse = conn.execute(text("SELECT count(*) FROM filetransfersdb")).scalar() == args.rows
        if not reuse:
            path.unlink(missing_ok=True)
            fills["sqlite"] = fill(url, args.rows)
        tables["sqlite"] = measure(url, args.runs)

    pg = os.environ.get("ASO_TEST_POSTGRES_URL")
    if pg and not args.no_postgres:
        bench = _postgres_bench_url(pg)
        try:
            fills["postgresql"] = fill(bench, args.rows)
            tables["postgresql"] = measure(bench, args.runs)
        finally:
            _drop_postgres(bench)

    for engine, seconds in fills.items():
        print(f"filled {engine} with {args.rows} rows in {seconds:.0f} s")
    engines = list(tables)
    print()
    print(f"{'server time (ms)':<32}" + "".join(f"{e + ' p50':>16}{e + ' p95':>16}" for e in engines))
    for i, (label, _, _) in enumerate(tables[engines[0]]):
        cells = []
        for e in engines:
            _, p50, p95 = tables[e][i]
            if label == "rows in store":
                cells.append(f"{int(p50):>16}{'':>16}")
            else:
                cells.append(f"{p50:>16.1f}{p95:>16.1f}")
        print(f"{label:<32}" + "".join(cells))


if __name__ == "__main__":
    main()
