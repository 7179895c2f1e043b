"""A pass over a state database that already holds millions of finished rows: the slowdown.

    python benchmarks/history.py --rows 10000000                        # SQLite: 100k files over 10M finished rows
    python benchmarks/history.py --rows 200000 --files 10000 --users 100   # a quick check
    python benchmarks/history.py --rows 10000000 \\
        --postgres postgresql+psycopg://postgres@127.0.0.1/aso_history \\
        --postgres-empty postgresql+psycopg://postgres@127.0.0.1/aso_bench

A production state database keeps every finished row (DONE, FAILED, KILLED; publication
DONE, NOT_REQUIRED or FAILED) until ``aso archive`` moves it away. This builds such a
history once, in bulk (INSERT ... SELECT over generate_series on PostgreSQL, over a
recursive CTE on SQLite, a million rows per transaction), into a database it reuses on
the next run (SQLite: ``--cache-dir``/history-ROWS.db; PostgreSQL: the ``--postgres``
database), then runs benchmarks/pipeline.py (the real ``aso transfer``, ``aso monitor``
and ``aso reporter`` against ``aso fts-server --simulate``) once over an empty database
and once over the history, and prints the slowdown per component. The pipeline's own rows
are deleted after the run (they are the only rows created after the history), so the
history stays as built.

The history's rows belong to the benchmark's users and worker (a real history would), and
spread their times over the year before the build.
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import json
import subprocess
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aso.state.schema import tasks, transfers  # noqa: E402
from aso.state.store import Store  # noqa: E402

console = Console(stderr=True)
BATCH = 1_000_000
YEAR = 365 * 86400
WORKER = "asoworker"
#: files per history task
TASK_FILES = 200

# One row from its number i (1..N) and the build time: the same on both engines (SQLite's
# printf and PostgreSQL's lpad/to_hex/format), so the two histories match.
#   transfer state: 85 % DONE, 10 % FAILED, 5 % KILLED
#   publication: half the files publish; a published DONE file is DONE (1 in 50 FAILED),
#   a failed or killed one keeps NEW (the publisher never takes it), unpublished: NOT_REQUIRED
_STATE = "CASE WHEN i % 20 < 17 THEN 3 WHEN i % 20 < 19 THEN 2 ELSE 7 END"
_PUB = ("CASE WHEN i % 2 = 0 THEN 5 WHEN i % 20 >= 17 THEN 0 WHEN i % 50 = 1 THEN 2 ELSE 3 END")
_CREATED = "(:now - 400 * 86400 + (i * 365 * 86400) / :n)"

_COLUMNS = ("tm_id, tm_username, tm_taskname, tm_source, tm_destination, tm_source_lfn, tm_destination_lfn, "
            "tm_filesize, tm_checksum, tm_publish, tm_jobid, tm_job_retry_count, tm_type, tm_aso_worker, "
            "tm_transfer_state, tm_publication_state, tm_transfer_retry_count, tm_publication_retry_count, "
            "tm_transfer_max_retry_count, tm_publication_max_retry_count, tm_transfer_failure_reason, "
            "tm_fts_id, tm_fts_instance, tm_start_time, tm_last_update, tm_end_time, tm_creation_time")


def _select(sqlite: bool) -> str:
    if sqlite:
        user = "'user' || printf('%04d', i % :users)"
        row_id = "printf('%056x', i)"
        task = f"'201101_000000:' || {user} || '_hist' || (i / {TASK_FILES})"
        fts = "printf('%032x', i / 200)"
    else:
        user = "'user' || lpad((i % :users)::text, 4, '0')"
        row_id = "lpad(to_hex(i), 56, '0')"
        task = f"'201101_000000:' || {user} || '_hist' || (i / {TASK_FILES})"
        fts = "lpad(to_hex(i / 200), 32, '0')"
    return (
        f"SELECT {row_id}, {user}, {task}, 'T2_XX_Source', 'T2_YY_Dest', "
        f"'/store/temp/user/' || {user} || '/hist/' || (i / 1000) || '/out_' || i || '.root', "
        f"'/store/user/' || {user} || '/hist/' || (i / 1000) || '/out_' || i || '.root', "
        f"1000 + i % 1000, '0badc0de', i % 2, CAST(i AS TEXT), 0, 'output', '{WORKER}', "
        f"{_STATE}, {_PUB}, 0, 0, 2, 2, "
        f"CASE WHEN i % 20 >= 17 THEN 'history: failed on purpose' END, "
        f"{fts}, 'https://fts3.example.org:8446', "
        f"{_CREATED}, {_CREATED} + 3600, {_CREATED} + 3600, {_CREATED}"
    )


def _insert_batch(conn, sqlite: bool, start: int, stop: int, n: int, users: int, now: int) -> None:
    from sqlalchemy import text

    params = {"a": start, "b": stop, "n": n, "users": users, "now": now}
    if sqlite:
        sql = (f"WITH RECURSIVE s(i) AS (SELECT :a UNION ALL SELECT i + 1 FROM s WHERE i < :b) "
               f"INSERT INTO {transfers.name} ({_COLUMNS}) {_select(True)} FROM s")
    else:
        sql = f"INSERT INTO {transfers.name} ({_COLUMNS}) {_select(False)} FROM generate_series(CAST(:a AS BIGINT), CAST(:b AS BIGINT)) AS i"
    conn.execute(text(sql), params)


def history_rows(store: Store, since: int) -> int:
    """Rows created before ``since`` (the history: the pipeline's rows are all newer)."""
    from sqlalchemy import func, select

    with store._read() as conn:
        return conn.execute(select(func.count()).select_from(transfers)
                            .where(transfers.c.tm_creation_time < since)).scalar()


def remove_pipeline_rows(store: Store, since: int) -> None:
    """Delete what a pipeline run added (every row and task created at or after ``since``)."""
    from sqlalchemy import delete

    with store._write() as conn:
        conn.execute(delete(transfers).where(transfers.c.tm_creation_time >= since))
        conn.execute(delete(tasks).where(tasks.c.tm_creation_time >= since))


def build(url: str, rows: int, users: int) -> None:
    """The history, from an empty database: the indexes dropped during the bulk insert and
    made again after (faster than keeping nine B-trees up to date row by row)."""
    from sqlalchemy import text

    store = Store(url)
    store.drop_all()
    store.close()
    store = Store(url)
    sqlite = store.is_sqlite
    now = int(time.time()) - 86400
    start = time.perf_counter()
    with store._write() as conn:
        for index in transfers.indexes:
            index.drop(conn)
    with Progress(console=console) as progress:
        bar = progress.add_task(f"history: {rows} finished rows", total=rows)
        for a in range(1, rows + 1, BATCH):
            b = min(a + BATCH - 1, rows)
            with store._write() as conn:
                _insert_batch(conn, sqlite, a, b, rows, users, now)
            progress.update(bar, completed=b)
    with store._write() as conn:
        ntasks = (rows + TASK_FILES - 1) // TASK_FILES
        conn.execute(text(
            f"INSERT INTO {tasks.name} (tm_taskname, tm_username, tm_task_status, tm_creation_time) "
            f"SELECT DISTINCT tm_taskname, tm_username, 'COMPLETED', :now FROM {transfers.name}"
        ), {"now": now - 400 * 86400})
        console.print(f"  {ntasks} tasks; making the indexes again …")
        for index in transfers.indexes:
            index.create(conn)
    if not sqlite:
        # what autovacuum would have done by the time a table had grown this big
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"VACUUM ANALYZE {transfers.name}"))
            conn.execute(text(f"VACUUM ANALYZE {tasks.name}"))
    store.close()
    console.print(f"  built in {time.perf_counter() - start:.0f} s")


def explain(url: str, users: int) -> None:
    """Each query a pass, /metrics or the status page runs, with its time on the history and
    its plan (SQLite: EXPLAIN QUERY PLAN; PostgreSQL: EXPLAIN ANALYZE, rolled back)."""
    from sqlalchemy import event

    from aso.web import queries

    out = Console(stderr=True, width=250)
    store = Store(url)
    seen: list[tuple[str, object]] = []

    @event.listens_for(store.engine, "before_cursor_execute")
    def _record(conn, cursor, statement, params, context, executemany):
        if not executemany and statement.lstrip().upper().startswith(("SELECT", "UPDATE", "WITH", "DELETE")) \
                and "schema_version" not in statement and "changes()" not in statement:
            seen.append((statement, params))

    user, task = "user0001", "201101_000000:user0001_hist5"
    calls = [
        ("active_users", lambda: store.active_users(worker=WORKER, request_type="transfer")),
        ("acquire_transfers", lambda: store.acquire_transfers([user], 100, worker=WORKER, request_type="transfer")),
        ("acquired_transfers", lambda: store.acquired_transfers(user, 100000, worker=WORKER, request_type="transfer")),
        ("retry_transfers", lambda: store.retry_transfers(0, worker=WORKER)),
        ("stuck_transfers", lambda: store.stuck_transfers(["ACQUIRED", "SUBMITTED"], 36000, worker=WORKER)),
        ("transfers_to_kill", lambda: store.transfers_to_kill()),
        ("acquire_publication", lambda: store.acquire_publication(worker=WORKER)),
        ("acquired_publication", lambda: store.acquired_publication(worker=WORKER)),
        ("throttle_counts", store.throttle_counts),
        ("/metrics state_counts", store.state_counts),
        ("/metrics queue_depth", store.queue_depth),
        ("status page overview", lambda: queries.overview(store, None, with_health=False)),
        ("status page overview (a user)", lambda: queries.overview(store, user, with_health=False)),
        ("status page task", lambda: queries.task_page(store, None, task)),
        ("statistics (a task)", lambda: store.statistics(task=task)),
        ("archive candidates", lambda: store.archivable(int(time.time()) - 30 * 86400)),
    ]
    for name, call in calls:
        seen.clear()
        start = time.perf_counter()
        call()
        out.print(f"[bold]{name}[/]: {1000 * (time.perf_counter() - start):.1f} ms")
        for statement, params in list(seen):
            out.print("   " + " ".join(statement.split())[:200], style="dim", markup=False)
            with store.engine.connect() as conn:
                cursor = conn.connection.dbapi_connection.cursor()
                if store.is_sqlite:
                    cursor.execute("EXPLAIN QUERY PLAN " + statement, params)
                    lines = [r[-1] for r in cursor.fetchall()]
                else:
                    cursor.execute("BEGIN")
                    cursor.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + statement, params)
                    lines = [r[0] for r in cursor.fetchall()]
                    cursor.execute("ROLLBACK")
            for line in lines:
                out.print("      " + line, markup=False)
    store.close()


def run_pipeline(args, extra: list[str]) -> dict:
    command = [sys.executable, str(ROOT / "benchmarks" / "pipeline.py"), "--files", str(args.files),
               "--users", str(args.users), "--delegation-users", "0", "--json", *extra]
    console.print("  $ " + " ".join(command[1:]))
    out = subprocess.run(command, check=True, stdout=subprocess.PIPE, env=os.environ).stdout
    return json.loads(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000, help="finished rows in the history (default 10,000,000)")
    ap.add_argument("--files", type=int, default=100_000, help="files of the pipeline run (default 100,000)")
    ap.add_argument("--users", type=int, default=1000, help="users of the pipeline run and of the history")
    ap.add_argument("--postgres", metavar="URL", help="PostgreSQL database that holds the history (else SQLite)")
    ap.add_argument("--postgres-empty", metavar="URL", help="with --postgres: the database of the empty-database run")
    ap.add_argument("--cache-dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "aso-history",
                    help="SQLite: where history-ROWS.db is kept between runs")
    ap.add_argument("--rebuild", action="store_true", help="build the history even if it is there")
    ap.add_argument("--skip-empty", action="store_true", help="run only over the history")
    ap.add_argument("--build-only", action="store_true", help="build (or check) the history and stop")
    ap.add_argument("--explain", action="store_true",
                    help="print each pipeline, /metrics and status page query's time and plan on the history, and stop")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.postgres and not args.postgres_empty and not (args.skip_empty or args.build_only or args.explain):
        ap.error("--postgres needs --postgres-empty (the database of the run without history)")

    if args.postgres:
        url = args.postgres
    else:
        args.cache_dir.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{args.cache_dir / f'history-{args.rows}.db'}"
    since = int(time.time()) - 3600  # history rows are at least a day old
    store = Store(url)
    remove_pipeline_rows(store, since)
    have = history_rows(store, since)
    store.close()
    if have != args.rows or args.rebuild:
        console.print(f"building the history ({have} rows there, {args.rows} wanted) in {url} …")
        build(url, args.rows, args.users)
    else:
        console.print(f"reusing the history of {have} finished rows in {url}")
    if args.explain:
        explain(url, args.users)
    if args.build_only or args.explain:
        return 0

    empty = None
    if not args.skip_empty:
        empty = run_pipeline(args, ["--postgres", args.postgres_empty] if args.postgres else [])
    try:
        full = run_pipeline(args, ["--state-url", url])
    finally:
        store = Store(url)
        remove_pipeline_rows(store, since)
        store.close()

    result = {"rows": args.rows, "files": args.files, "users": args.users,
              "engine": "PostgreSQL" if args.postgres else "SQLite", "empty": empty, "history": full}
    if empty:
        result["slowdown"] = {
            r["component"]: round(h["seconds"] / r["seconds"], 2) if r["seconds"] else None
            for r, h in zip(empty["components"], full["components"], strict=True)
        }
        result["slowdown"]["end to end"] = round(full["end_to_end_seconds"] / empty["end_to_end_seconds"], 2)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    table = Table(title=f"{args.files} files, {args.users} users, {result['engine']}: empty database vs "
                        f"{args.rows} finished rows")
    for col in ("component", "empty s", "history s", "slowdown", "empty peak MB", "history peak MB"):
        table.add_column(col, justify="left" if col == "component" else "right")
    for i, h in enumerate(full["components"]):
        e = empty["components"][i] if empty else None
        table.add_row(h["component"], f"{e['seconds']:.2f}" if e else "", f"{h['seconds']:.2f}",
                      f"{result['slowdown'][h['component']]:.2f}x" if e else "",
                      f"{e['peak MB']}" if e else "", f"{h['peak MB']}")
    table.add_row("end to end", f"{empty['end_to_end_seconds']:.2f}" if empty else "", f"{full['end_to_end_seconds']:.2f}",
                  f"{result['slowdown']['end to end']:.2f}x" if empty else "", "", "")
    Console(width=140).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
