"""Every query of the status page, each confined to the viewer's rows.

A user sees only their own rows: ``owner`` (the identity's ``owner_filter``) becomes a
``tm_username = :owner`` term of each query, so a template can never show what a query did not
confine. Operators and the service see everything (``owner`` None).

The overview must stay fast with millions of finished rows, so each query is answered from an
index and none reads the finished rows one by one:

- state totals: a scan of the covering index ix_ftdb_publish (publish flag, publication and
  transfer state), grouped in its own order (no sort); a user's from ix_ftdb_user_tstate_worker;
- the queue (per task, per link, oldest waiting and in flight): the partial index
  ix_ftdb_live, which holds only NEW, ACQUIRED and SUBMITTED rows;
- throughput: a range of the partial index ix_ftdb_end (covering: end time, state, size);
- recent failures: a range of the partial index ix_ftdb_failing, then those rows' reasons.

The partial indexes' predicates are repeated word for word (``LIVE_STATES``,
``FAILING_STATES``): SQLite uses a partial index only when the query contains its terms.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, text

from aso.state.records import PassRecord
from aso.state.schema import FAILING_STATES, LIVE_STATES, transfers
from aso.state.states import PublicationState, TransferState
from aso.state.store import Store

_c = transfers.c
T = TransferState
P = PublicationState

#: tasks listed on the overview (those with the most files in the queue)
TOP_TASKS = 25
#: failure reasons are grouped on their first characters (they end with ids and times)
REASON_PREFIX = 160
#: files per task page
PAGE_SIZE = 200
QUEUE_STATES = (T.NEW, T.ACQUIRED, T.SUBMITTED)


@dataclass
class Bucket:
    start: int
    files: int = 0
    bytes: int = 0


@dataclass
class Overview:
    now: int
    transfer_counts: dict[str, int]
    publication_counts: dict[str, int]
    tasks: list[dict[str, Any]]
    tasks_total: int
    links: list[dict[str, Any]]
    oldest_waiting: list[dict[str, Any]]
    oldest_in_flight: list[dict[str, Any]]
    hour: list[Bucket]
    day: list[Bucket]
    failures: list[dict[str, Any]]
    health: list[PassRecord] | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.transfer_counts.values())


def _owned(query, owner: str | None):
    return query if owner is None else query.where(_c.tm_username == owner)


def overview(store: Store, owner: str | None, *, with_health: bool, now: int | None = None) -> Overview:
    """Everything the overview page shows, for the viewer ``owner`` (None: everyone)."""
    now = int(time.time()) if now is None else now
    timings: dict[str, float] = {}

    def timed(name: str, started: float) -> None:
        timings[name] = time.perf_counter() - started

    with store._read() as conn:
        t0 = time.perf_counter()
        transfer_counts: dict[str, int] = dict.fromkeys((s.name for s in T), 0)
        publication_counts: dict[str, int] = dict.fromkeys((s.name for s in P), 0)
        # Grouped in the covering index's own column order, so the database streams it.
        totals = _owned(
            select(_c.tm_publish, _c.tm_publication_state, _c.tm_transfer_state, func.count())
            .group_by(_c.tm_publish, _c.tm_publication_state, _c.tm_transfer_state), owner)
        for _publish, pstate, tstate, n in conn.execute(totals):
            transfer_counts[T(tstate).name] += n
            publication_counts[P(pstate).name] += n
        timed("totals", t0)

        t0 = time.perf_counter()
        queue = _owned(
            select(_c.tm_username, _c.tm_taskname, _c.tm_source, _c.tm_destination, _c.tm_transfer_state,
                   func.count(), func.min(_c.tm_last_update))
            .where(text(LIVE_STATES))
            .group_by(_c.tm_username, _c.tm_taskname, _c.tm_source, _c.tm_destination, _c.tm_transfer_state), owner)
        per_task: dict[tuple[str, str], dict[str, Any]] = {}
        per_link: dict[tuple[str, str], dict[str, Any]] = {}
        for user, task, src, dst, tstate, n, oldest in conn.execute(queue):
            name = T(tstate).name
            t = per_task.setdefault((user, task), {"user": user, "task": task, "NEW": 0, "ACQUIRED": 0,
                                                   "SUBMITTED": 0, "oldest": oldest})
            t[name] += n
            t["oldest"] = min(t["oldest"], oldest)
            link = per_link.setdefault((src, dst), {"source": src, "destination": dst, "NEW": 0, "ACQUIRED": 0,
                                                    "SUBMITTED": 0})
            link[name] += n
        for row in (*per_task.values(), *per_link.values()):
            row["queue"] = row["NEW"] + row["ACQUIRED"] + row["SUBMITTED"]
        tasks = sorted(per_task.values(), key=lambda r: (-r["queue"], r["oldest"], r["task"]))
        links = sorted(per_link.values(), key=lambda r: (-r["queue"], r["source"], r["destination"]))
        timed("queue", t0)

        t0 = time.perf_counter()
        oldest: dict[int, list[dict[str, Any]]] = {}
        for state in QUEUE_STATES:
            # One seek per state in ix_ftdb_live (state, last update, ...): oldest first.
            query = _owned(
                select(_c.tm_last_update, _c.tm_username, _c.tm_taskname, _c.tm_source, _c.tm_destination)
                .where(text(LIVE_STATES), _c.tm_transfer_state == int(state))
                .order_by(_c.tm_last_update).limit(5), owner)
            oldest[state] = [{"since": r[0], "age": now - r[0], "user": r[1], "task": r[2], "source": r[3],
                              "destination": r[4], "state": state.name} for r in conn.execute(query)]
        in_flight = sorted(oldest[T.ACQUIRED] + oldest[T.SUBMITTED], key=lambda r: r["since"])[:5]
        timed("oldest", t0)

        t0 = time.perf_counter()
        hour_start, day_start = now - 3600, now - 86400
        step_hour, step_day = 300, 3600
        hour = [Bucket(hour_start + i * step_hour) for i in range(12)]
        day = [Bucket(day_start + i * step_day) for i in range(24)]
        # Five-minute buckets over the day, from the covering index ix_ftdb_end; the day's
        # hours are sums of them.
        bucket = ((_c.tm_end_time - day_start) // step_hour).label("b")
        throughput = _owned(
            select(bucket, func.count(), func.coalesce(func.sum(_c.tm_filesize), 0))
            .where(_c.tm_end_time >= day_start, _c.tm_end_time < now + 1, _c.tm_transfer_state == int(T.DONE))
            .group_by(bucket), owner)
        for b, n, size in conn.execute(throughput):
            b = min(int(b), 24 * 12 - 1)
            d = day[b // 12]
            d.files += n
            d.bytes += int(size)
            at = day_start + b * step_hour
            if at >= hour_start:
                h = hour[min((at - hour_start) // step_hour, 11)]
                h.files += n
                h.bytes += int(size)
        timed("throughput", t0)

        t0 = time.perf_counter()
        reason = func.substr(func.coalesce(_c.tm_transfer_failure_reason, ""), 1, REASON_PREFIX).label("r")
        failing = _owned(
            select(_c.tm_transfer_state, reason, func.count().label("n"), func.max(_c.tm_last_update))
            .where(text(FAILING_STATES), _c.tm_last_update >= day_start)
            .group_by(_c.tm_transfer_state, reason)
            .order_by(func.count().desc(), reason).limit(20), owner)
        failures = [{"state": T(s).name, "reason": r, "count": n, "last": last, "truncated": len(r) >= REASON_PREFIX}
                    for s, r, n, last in conn.execute(failing)]
        timed("failures", t0)

    health = None
    if with_health:
        t0 = time.perf_counter()
        health = store.component_passes()
        timed("health", t0)
    return Overview(now, transfer_counts, publication_counts, tasks[:TOP_TASKS], len(tasks), links,
                    oldest[T.NEW], in_flight, hour, day, failures, health, timings)


@dataclass
class TaskPage:
    task: str
    user: str
    counts: dict[str, int]
    files: list[dict[str, Any]]
    total: int
    page: int
    pages: int


_TASK_COLUMNS = [
    _c.tm_id, _c.tm_username, _c.tm_source, _c.tm_destination, _c.tm_source_lfn, _c.tm_destination_lfn,
    _c.tm_filesize, _c.tm_transfer_state, _c.tm_publication_state, _c.tm_transfer_retry_count,
    _c.tm_transfer_max_retry_count, _c.tm_transfer_failure_reason, _c.tm_publication_failure_reason,
    _c.tm_fts_id, _c.tm_fts_instance, _c.tm_path, _c.tm_last_update, _c.tm_end_time, _c.tm_jobid,
]


def task_page(store: Store, owner: str | None, task: str, *, state: TransferState | None = None,
              page: int = 1) -> TaskPage | None:
    """One page of a task's files (None when the viewer has no file in it: another user's
    task looks exactly like one that does not exist)."""
    with store._read() as conn:
        counts_q = _owned(select(_c.tm_transfer_state, _c.tm_username, func.count())
                          .where(_c.tm_taskname == task).group_by(_c.tm_transfer_state, _c.tm_username), owner)
        counts: dict[str, int] = defaultdict(int)
        users: set[str] = set()
        for s, user, n in conn.execute(counts_q):
            counts[T(s).name] += n
            users.add(user)
        if not counts:
            return None
        total = counts[state.name] if state is not None else sum(counts.values())
        pages = max(1, -(-total // PAGE_SIZE))
        query = _owned(select(*_TASK_COLUMNS).where(_c.tm_taskname == task), owner)
        if state is not None:
            query = query.where(_c.tm_transfer_state == int(state))
        query = query.order_by(_c.tm_source_lfn, _c.tm_id).limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)
        files = []
        for r in conn.execute(query).mappings():
            row = dict(r)
            row["tm_transfer_state"] = T(row["tm_transfer_state"]).name
            row["tm_publication_state"] = P(row["tm_publication_state"]).name
            row["fts_link"] = fts_job_link(row["tm_fts_instance"], row["tm_fts_id"])
            files.append(row)
    return TaskPage(task, ", ".join(sorted(users)), dict(counts), files, total, page, pages)


def fts_job_link(instance: str | None, job_id: str | None) -> str | None:
    """FTS3's REST URL of a job, only for an http(s) endpoint: the endpoint comes from the
    store, and a ``javascript:`` one must never become a link."""
    if not instance or not job_id or not instance.startswith(("https://", "http://")):
        return None
    return f"{instance.rstrip('/')}/jobs/{job_id}"
