"""The state store: every query on transfers, tasks and file metadata.

One module owns the SQL (SQLAlchemy Core), so SQLite and PostgreSQL run the same code.
Every operation works on a batch: one statement, or one ``executemany``, per batch (IN
lists are chunked to stay under the databases' parameter limits). State changes are checked
against ``aso.state.states`` before anything is written, and a call is all-or-nothing.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    and_,
    bindparam,
    case,
    create_engine,
    event,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from aso import validate
from aso.errors import (
    BackendUnavailable,
    ForbiddenError,
    TransitionError,
    ValidationError,
)
from aso.state.records import (
    TRANSFER_COLUMNS,
    InjectResult,
    KillResult,
    PublicationUpdate,
    TransferUpdate,
    UpdateResult,
)
from aso.state.requests import DEFAULT_MAX_RETRY, MAX_RETRY_LIMIT, transfer_row
from aso.state.schema import (
    LATEST_VERSION,
    MIGRATIONS,
    TASK_COLUMNS,
    file_metadata,
    schema_version,
    tasks,
    transfers,
)
from aso.state.states import (
    PUBLICATION_TRANSITIONS,
    REINJECTABLE,
    TRANSFER_IN_FLIGHT,
    TRANSFER_TRANSITIONS,
    PublicationState,
    TransferState,
)

CHUNK = 500
ACQUIRE_USERS_PER_TRANSACTION = 100
ANALYZE_AFTER = 5000
REASON_MAX = 1000
#: bytes of page cache all SQLite connections of a process may hold together (soft limit)
SQLITE_HEAP_LIMIT = 96 * 2**20
T = TransferState
P = PublicationState
_KILLABLE = (T.NEW, T.ACQUIRED, T.SUBMITTED, T.RETRY)
_TERMINAL_TRANSFER = (T.DONE, T.FAILED, T.KILLED)
_c = transfers.c


def _chunks(items: Sequence, size: int = CHUNK) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@contextmanager
def _batch_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector for one batch.

    A 100k-row batch allocates hundreds of thousands of small objects; each allocation
    threshold triggers a collection that rescans all of them, which makes big batches cost
    more per row than small ones. Reference counting still frees everything meanwhile.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _now() -> int:
    return int(time.time())


def _row(mapping) -> dict[str, Any]:
    row = {name: mapping[name] for name in TRANSFER_COLUMNS}
    row["tm_transfer_state"] = T(row["tm_transfer_state"]).name
    row["tm_publication_state"] = P(row["tm_publication_state"]).name
    return row


def _reason(value: str | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        value = str(value)
    return value[:REASON_MAX]


class Store:
    """The store behind both backends; ``worker``/``owner`` are explicit arguments."""

    def __init__(self, url: str, *, max_retry: int = DEFAULT_MAX_RETRY, publication_max_retry: int = DEFAULT_MAX_RETRY):
        """``max_retry``/``publication_max_retry``: stored in rows whose request gives none
        ([transfer] max_retry and [publisher] max_retry of the host that stores them)."""
        self.url = url
        self.max_retry = max_retry
        self.publication_max_retry = publication_max_retry
        self.is_sqlite = url.startswith("sqlite")
        try:
            self.engine = self._make_engine(url)
            self._migrate()
        except SQLAlchemyError as exc:
            raise BackendUnavailable(f"state database {self._safe_url()}: {exc.__class__.__name__}: {exc.orig if hasattr(exc, 'orig') else exc}") from exc

    # -- engine and transactions ---------------------------------------------------------
    def _safe_url(self) -> str:
        from sqlalchemy.engine import make_url

        return make_url(self.url).render_as_string(hide_password=True)

    def _make_engine(self, url: str) -> Engine:
        if not self.is_sqlite:
            return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            # Let SQLAlchemy's "begin" event issue BEGIN itself, so writers can ask for
            # BEGIN IMMEDIATE and never deadlock upgrading a read lock.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=60000")
            # A larger page cache keeps 100k-row batches from thrashing the indexes.
            cur.execute("PRAGMA cache_size=-131072")
            # ...but the limit is per connection, and a component's threads each hold one:
            # a process-wide soft heap limit makes them share one budget instead.
            cur.execute(f"PRAGMA soft_heap_limit={SQLITE_HEAP_LIMIT}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.pop("immediate", False) else "BEGIN")

        return engine

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction: BEGIN IMMEDIATE on SQLite; rolled back on any error."""
        try:
            with self.engine.connect() as conn:
                if self.is_sqlite:
                    conn.info["immediate"] = True
                with conn.begin():
                    yield conn
        except OperationalError as exc:
            raise BackendUnavailable(f"state database: {exc.orig}") from exc

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except OperationalError as exc:
            raise BackendUnavailable(f"state database: {exc.orig}") from exc

    def _for_update(self, query):
        return query if self.is_sqlite else query.with_for_update()

    def _migrate(self) -> None:
        with self._write() as conn:
            if not self.is_sqlite:
                # Serialise concurrent first openings (server and components starting at once).
                conn.execute(text("SELECT pg_advisory_xact_lock(7472231)"))
            schema_version.create(conn, checkfirst=True)
            current = conn.execute(select(func.max(schema_version.c.version))).scalar() or 0
            if current > LATEST_VERSION:
                raise BackendUnavailable(
                    f"state database schema version {current} is newer than this aso understands ({LATEST_VERSION})"
                )
            for version, apply in MIGRATIONS:
                if version > current:
                    apply(conn)
                    conn.execute(insert(schema_version).values(version=version, applied=_now()))

    def close(self) -> None:
        self.engine.dispose()

    def drop_all(self) -> None:
        """Remove every table (tests and ``aso`` maintenance only)."""
        from aso.state.schema import metadata

        with self._write() as conn:
            metadata.drop_all(conn)

    # -- helpers -------------------------------------------------------------------------
    def _select_rows(self, conn: Connection, ids: Sequence[str], columns=None, lock: bool = False) -> dict[str, Any]:
        cols = columns or [transfers]
        found: dict[str, Any] = {}
        for chunk in _chunks(sorted(set(ids))):
            query = select(*cols).where(_c.tm_id.in_(chunk))
            if lock:
                query = self._for_update(query)
            for r in conn.execute(query).mappings():
                found[r["tm_id"]] = r
        return found

    @staticmethod
    def _owner_clause(owner: str | None):
        return _c.tm_username == owner if owner is not None else None

    # -- injection -----------------------------------------------------------------------
    def inject(
        self,
        requests: list[dict[str, Any]],
        owner: str | None = None,
        *,
        check: Callable[[int, dict[str, Any]], None] | None = None,
        confine_tasks: bool = False,
    ) -> InjectResult:
        """Insert (or re-initialise, by CRAB's rules) transfer requests, all or nothing.

        ``owner``: rows must be this user's. ``check(i, row)`` may refuse a validated row
        (the server's namespace rule). ``confine_tasks``: a row may only join a task that
        does not exist yet or belongs to the row's user.
        """
        with _batch_gc():
            return self._inject(requests, owner, check, confine_tasks)

    def _inject(self, requests, owner, check, confine_tasks) -> InjectResult:
        if not isinstance(requests, list):
            raise ValidationError("transfers", "expected a list of transfer requests")
        now = _now()
        rows = [transfer_row(i, req, now, self.max_retry, self.publication_max_retry) for i, req in enumerate(requests)]
        seen: dict[str, int] = {}
        for i, row in enumerate(rows):
            if row["tm_id"] in seen:
                raise ValidationError(f"[{i}].source_lfn", f"same file as request [{seen[row['tm_id']]}]")
            seen[row["tm_id"]] = i
            if owner is not None and row["tm_username"] != owner:
                raise ForbiddenError(f"[{i}].username: {owner} cannot inject transfers of {row['tm_username']}")
            if check is not None:
                check(i, row)
        result = InjectResult()
        with self._write() as conn:
            if confine_tasks:
                self._check_task_owners(conn, rows)
            existing = self._select_rows(
                conn, [r["tm_id"] for r in rows],
                [_c.tm_id, _c.tm_username, _c.tm_transfer_state, _c.tm_job_retry_count, _c.tm_start_time],
                lock=True,
            )
            to_insert, to_reinit = [], []
            for row in rows:
                old = existing.get(row["tm_id"])
                if old is None:
                    to_insert.append(row)
                    continue
                state = T(old["tm_transfer_state"])
                if old["tm_username"] != row["tm_username"]:
                    result.skipped.append({"id": row["tm_id"], "state": state.name, "reason": "the file belongs to another user"})
                elif state in TRANSFER_IN_FLIGHT:
                    result.skipped.append({"id": row["tm_id"], "state": state.name, "reason": "still in flight"})
                elif state in REINJECTABLE and (old["tm_job_retry_count"], old["tm_start_time"]) != (row["tm_job_retry_count"], row["tm_start_time"]):
                    to_reinit.append(row)
                else:
                    result.skipped.append({"id": row["tm_id"], "state": state.name, "reason": "same job retry already recorded"})
            if to_insert:
                conn.execute(insert(transfers), to_insert)
            if to_reinit:
                params = [{("b_" + k): v for k, v in r.items()} for r in to_reinit]
                conn.execute(
                    update(transfers)
                    .where(_c.tm_id == bindparam("b_tm_id"))
                    .values({k: bindparam("b_" + k) for k in TRANSFER_COLUMNS if k not in ("tm_id", "tm_creation_time")}),
                    params,
                )
            self._ensure_tasks(conn, {r["tm_taskname"]: r["tm_username"] for r in to_insert + to_reinit}, now)
            if not self.is_sqlite and len(to_insert) >= ANALYZE_AFTER:
                # Fresh statistics, or the planner takes a 100k-row table for empty and
                # picks nested loops for the next acquisition (minutes instead of a second).
                conn.execute(text("ANALYZE filetransfersdb"))
        result.inserted = [r["tm_id"] for r in to_insert]
        result.reinitialised = [r["tm_id"] for r in to_reinit]
        return result

    def _check_task_owners(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        first: dict[str, int] = {}
        for i, row in enumerate(rows):
            first.setdefault(row["tm_taskname"], i)
        owners: dict[str, str] = {}
        for chunk in _chunks(list(first)):
            query = select(tasks.c.tm_taskname, tasks.c.tm_username).where(tasks.c.tm_taskname.in_(chunk))
            owners.update((name, user) for name, user in conn.execute(query))
        for i, row in enumerate(rows):
            owner = owners.get(row["tm_taskname"], row["tm_username"])
            if owner != row["tm_username"]:
                raise ForbiddenError(f"[{i}].taskname: {row['tm_taskname']!r} is not a task of {row['tm_username']}")
            owners.setdefault(row["tm_taskname"], row["tm_username"])

    def _ensure_tasks(self, conn: Connection, owners: dict[str, str], now: int) -> None:
        if not owners:
            return
        known = set()
        for chunk in _chunks(list(owners)):
            known.update(conn.execute(select(tasks.c.tm_taskname).where(tasks.c.tm_taskname.in_(chunk))).scalars())
        new = [
            {"tm_taskname": name, "tm_username": user, "tm_task_status": "SUBMITTED", "tm_creation_time": now}
            for name, user in owners.items() if name not in known
        ]
        if new:
            conn.execute(insert(tasks), new)

    # -- reads ---------------------------------------------------------------------------
    def get_transfers(self, ids: list[str], owner: str | None = None) -> list[dict[str, Any]]:
        for i, row_id in enumerate(ids):
            validate.row_id(row_id, f"ids[{i}]")
        with self._read() as conn:
            found = self._select_rows(conn, ids)
        rows = [_row(found[i]) for i in dict.fromkeys(ids) if i in found]
        if owner is not None:
            rows = [r for r in rows if r["tm_username"] == owner]
        return rows

    def list_transfers(
        self,
        *,
        user: str | None = None,
        task: str | None = None,
        states: list | None = None,
        limit: int = 10000,
        owner: str | None = None,
    ) -> list[dict[str, Any]]:
        query = select(transfers)
        if user is not None:
            query = query.where(_c.tm_username == validate.username(user, "username"))
        if task is not None:
            query = query.where(_c.tm_taskname == validate.taskname(task, "taskname"))
        if states:
            query = query.where(_c.tm_transfer_state.in_([int(T.parse(s, "states")) for s in states]))
        if owner is not None:
            query = query.where(_c.tm_username == owner)
        limit = validate.non_negative_int(limit, "limit")
        query = query.order_by(_c.tm_creation_time, _c.tm_id).limit(limit)
        with self._read() as conn:
            return [_row(r) for r in conn.execute(query).mappings()]

    def statistics(self, *, user: str | None = None, task: str | None = None, owner: str | None = None) -> list[dict[str, Any]]:
        query = select(
            _c.tm_username, _c.tm_taskname, _c.tm_transfer_state, _c.tm_publication_state, func.count().label("n")
        ).group_by(_c.tm_username, _c.tm_taskname, _c.tm_transfer_state, _c.tm_publication_state)
        if user is not None:
            query = query.where(_c.tm_username == validate.username(user))
        if task is not None:
            query = query.where(_c.tm_taskname == validate.taskname(task))
        if owner is not None:
            query = query.where(_c.tm_username == owner)
        with self._read() as conn:
            return [
                {
                    "username": r[0],
                    "taskname": r[1],
                    "transfer_state": T(r[2]).name,
                    "publication_state": P(r[3]).name,
                    "count": r[4],
                }
                for r in conn.execute(query.order_by(_c.tm_username, _c.tm_taskname))
            ]

    # -- transfer pipeline ---------------------------------------------------------------
    def active_users(self, *, worker: str) -> list[str]:
        validate.worker(worker)
        query = (
            select(_c.tm_username)
            .where(
                or_(
                    and_(_c.tm_transfer_state == int(T.NEW), _free_or_mine(worker)),
                    and_(_c.tm_transfer_state == int(T.ACQUIRED), _c.tm_aso_worker == worker),
                )
            )
            .distinct()
            .order_by(_c.tm_username)
        )
        with self._read() as conn:
            return list(conn.execute(query).scalars())

    def acquire_transfers(self, users: list[str], limit: int, *, worker: str) -> int:
        validate.worker(worker)
        limit = validate.non_negative_int(limit, "limit")
        users = [validate.username(u, f"users[{i}]") for i, u in enumerate(users)]
        if not users or limit == 0:
            return 0
        now = _now()
        total = 0
        # One transaction per chunk of users: a row taken is this worker's whichever chunk a
        # crash stops at, and on SQLite a 100k-row transaction held every dirty page (and the
        # ranking's sort) in memory at once, which made acquisition a component's peak.
        for chunk in _chunks(users, ACQUIRE_USERS_PER_TRANSACTION):
            with self._write() as conn:
                if not self.is_sqlite:
                    conn.execute(text("SET LOCAL enable_nestloop = off"))
                # One statement for every user of the chunk: rank each user's unowned NEW
                # rows oldest first and take the first `limit` of each.
                ranked = (
                    select(
                        _c.tm_id,
                        func.row_number()
                        .over(partition_by=_c.tm_username, order_by=(_c.tm_creation_time, _c.tm_id))
                        .label("rn"),
                    )
                    .where(
                        _c.tm_username.in_(chunk),
                        _c.tm_transfer_state == int(T.NEW),
                        _free_or_mine(worker),
                    )
                    .subquery()
                )
                picked = select(ranked.c.tm_id).where(ranked.c.rn <= limit)
                if not self.is_sqlite:
                    # PostgreSQL plans IN (window subquery) as a per-row rescan; a join
                    # (UPDATE ... FROM) runs the ranking once.
                    picked_rows = picked.subquery()
                    key = _c.tm_id == picked_rows.c.tm_id
                else:
                    key = _c.tm_id.in_(picked)
                result = conn.execute(
                    update(transfers)
                    .where(
                        key,
                        # Re-checked per row under the row lock on PostgreSQL, so two
                        # acquirers never take the same row.
                        _c.tm_transfer_state == int(T.NEW),
                        _free_or_mine(worker),
                    )
                    .values(tm_transfer_state=int(T.ACQUIRED), tm_aso_worker=worker, tm_last_update=now)
                    .execution_options(synchronize_session=False)
                )
                total += result.rowcount
        return total

    def acquired_transfers(self, user: str | None = None, limit: int = 10000, *, worker: str) -> list[dict[str, Any]]:
        validate.worker(worker)
        query = select(transfers).where(_c.tm_transfer_state == int(T.ACQUIRED), _c.tm_aso_worker == worker)
        if user is not None:
            query = query.where(_c.tm_username == validate.username(user))
        query = query.order_by(_c.tm_creation_time, _c.tm_id).limit(validate.non_negative_int(limit, "limit"))
        with self._read() as conn:
            return [_row(r) for r in conn.execute(query).mappings()]

    def update_transfers(self, updates: list[TransferUpdate], *, worker: str) -> UpdateResult:
        with _batch_gc():
            return self._update_transfers(updates, worker)

    def _update_transfers(self, updates: list[TransferUpdate], worker: str) -> UpdateResult:
        validate.worker(worker)
        _check_batch_ids([u.id for u in updates])
        parsed = []
        for i, u in enumerate(updates):
            _short(u.fts_id, f"list_of_fts_id[{i}]", 255)
            _short(u.fts_instance, f"list_of_fts_instance[{i}]", 255)
            state = T.parse(u.state, f"list_of_transfer_state[{i}]")
            expect = T.parse(u.expect_state, f"list_of_expected_state[{i}]") if u.expect_state is not None else None
            inc = validate.non_negative_int(u.retry_increment, f"list_of_retry_value[{i}]", MAX_RETRY_LIMIT)
            parsed.append((u, state, expect, inc))
        result = UpdateResult()
        now = _now()
        with self._write() as conn:
            current = self._select_rows(
                conn, [u.id for u, *_ in parsed], [_c.tm_id, _c.tm_transfer_state, _c.tm_fts_id], lock=True
            )
            params = []
            for u, state, expect, inc in parsed:
                row = current.get(u.id)
                if row is None:
                    result.skipped.append({"id": u.id, "state": None, "reason": "no such transfer"})
                    continue
                now_state = T(row["tm_transfer_state"])
                if expect is not None and now_state != expect:
                    result.skipped.append({"id": u.id, "state": now_state.name, "reason": f"expected {expect.name}"})
                    continue
                if u.expect_fts_id is not None and row["tm_fts_id"] != u.expect_fts_id:
                    result.skipped.append({"id": u.id, "state": now_state.name, "reason": f"belongs to FTS job {row['tm_fts_id']}, not {u.expect_fts_id}"})
                    continue
                if now_state == state and (u.fts_id is None or u.fts_id == row["tm_fts_id"]):
                    # A repeated update (a retried request, a result handed over twice) is
                    # already applied: report it, change nothing.
                    result.skipped.append({"id": u.id, "state": now_state.name, "reason": f"already {state.name}"})
                    continue
                target = state
                if state == T.SUBMITTED and now_state == T.KILL:
                    # Killed while being submitted: keep KILL but record where it went, so the
                    # retry manager can cancel it in FTS.
                    target = T.KILL
                elif state == T.DONE and now_state == T.KILL and expect == T.KILL:
                    pass  # FTS finished the copy before the kill reached it: the file is there
                elif state not in TRANSFER_TRANSITIONS[now_state]:
                    raise TransitionError(u.id, now_state.name, state.name)
                params.append(
                    {
                        "b_id": u.id,
                        "b_state": int(target),
                        "b_reason": _reason(u.reason),
                        "b_keep_reason": u.reason is None,
                        "b_inc": inc,
                        "b_fts_id": u.fts_id,
                        "b_fts_instance": u.fts_instance,
                        "b_now": now,
                        "b_end": now if target in _TERMINAL_TRANSFER else None,
                    }
                )
                result.updated.append(u.id)
            if params:
                # Walking the primary-key B-tree in order keeps big batches cache-friendly.
                params.sort(key=lambda p: p["b_id"])
                conn.execute(
                    update(transfers)
                    .where(_c.tm_id == bindparam("b_id"))
                    .values(
                        tm_transfer_state=bindparam("b_state"),
                        tm_transfer_failure_reason=case(
                            (bindparam("b_keep_reason"), _c.tm_transfer_failure_reason), else_=bindparam("b_reason")
                        ),
                        tm_transfer_retry_count=_c.tm_transfer_retry_count + bindparam("b_inc"),
                        tm_fts_id=func.coalesce(bindparam("b_fts_id"), _c.tm_fts_id),
                        tm_fts_instance=func.coalesce(bindparam("b_fts_instance"), _c.tm_fts_instance),
                        tm_last_update=bindparam("b_now"),
                        tm_end_time=func.coalesce(bindparam("b_end"), _c.tm_end_time),
                    )
                    .execution_options(synchronize_session=False),
                    params,
                )
        return result

    def retry_transfers(self, cooloff: int, *, worker: str) -> int:
        validate.worker(worker)
        cooloff = validate.non_negative_int(cooloff, "time_to")
        now = _now()
        with self._write() as conn:
            return conn.execute(
                update(transfers)
                .where(
                    _c.tm_transfer_state == int(T.RETRY),
                    _c.tm_aso_worker == worker,
                    _c.tm_last_update < now - cooloff,
                )
                .values(
                    tm_transfer_state=int(T.NEW),
                    tm_aso_worker=None,
                    tm_transfer_retry_count=_c.tm_transfer_retry_count + 1,
                    tm_last_update=now,
                )
            ).rowcount

    def stuck_transfers(self, states: list, older_than: int, limit: int = 10000, *, worker: str) -> list[dict[str, Any]]:
        validate.worker(worker)
        codes = [int(T.parse(s, "states")) for s in states]
        older_than = validate.non_negative_int(older_than, "older_than")
        query = (
            select(transfers)
            .where(
                _c.tm_transfer_state.in_(codes),
                _c.tm_aso_worker == worker,
                _c.tm_last_update < _now() - older_than,
            )
            .order_by(_c.tm_last_update, _c.tm_id)
            .limit(validate.non_negative_int(limit, "limit"))
        )
        with self._read() as conn:
            return [_row(r) for r in conn.execute(query).mappings()]

    def release_transfers(self, ids: list[str], *, worker: str) -> int:
        validate.worker(worker)
        for i, row_id in enumerate(ids):
            validate.row_id(row_id, f"list_of_ids[{i}]")
        total = 0
        now = _now()
        with self._write() as conn:
            for chunk in _chunks(list(ids)):
                total += conn.execute(
                    update(transfers)
                    .where(_c.tm_id.in_(chunk), _c.tm_transfer_state == int(T.ACQUIRED), _c.tm_aso_worker == worker)
                    .values(tm_transfer_state=int(T.NEW), tm_aso_worker=None, tm_last_update=now)
                ).rowcount
        return total

    def _target_ids(self, conn: Connection, task: str | None, ids: list[str] | None, owner: str | None, columns) -> tuple[list[str], dict[str, Any]]:
        if (task is None) == (ids is None):
            raise ValidationError("taskname", "give exactly one of taskname or list_of_ids")
        if task is not None:
            query = select(*columns).where(_c.tm_taskname == validate.taskname(task))
            if owner is not None:
                query = query.where(_c.tm_username == owner)
            found = {r["tm_id"]: r for r in conn.execute(self._for_update(query)).mappings()}
            return list(found), found
        for i, row_id in enumerate(ids):
            validate.row_id(row_id, f"list_of_ids[{i}]")
        found = self._select_rows(conn, ids, columns, lock=True)
        if owner is not None:
            found = {k: v for k, v in found.items() if v["tm_username"] == owner}
        return list(dict.fromkeys(ids)), found

    def request_kill(self, *, task: str | None = None, ids: list[str] | None = None, owner: str | None = None) -> KillResult:
        result = KillResult()
        now = _now()
        with self._write() as conn:
            wanted, found = self._target_ids(conn, task, ids, owner, [_c.tm_id, _c.tm_username, _c.tm_transfer_state])
            to_kill = []
            for row_id in wanted:
                row = found.get(row_id)
                if row is None:
                    result.failed_kill.append({"id": row_id, "state": None, "reason": "no such transfer"})
                    continue
                state = T(row["tm_transfer_state"])
                if state in _KILLABLE:
                    to_kill.append(row_id)
                elif state == T.KILL:
                    result.killed.append(row_id)
                else:
                    result.failed_kill.append({"id": row_id, "state": state.name, "reason": f"already {state.name}"})
            for chunk in _chunks(to_kill):
                conn.execute(
                    update(transfers)
                    .where(_c.tm_id.in_(chunk))
                    .values(tm_transfer_state=int(T.KILL), tm_last_update=now)
                )
            result.killed.extend(to_kill)
        return result

    def transfers_to_kill(self, limit: int = 5000) -> list[dict[str, Any]]:
        query = (
            select(transfers)
            .where(_c.tm_transfer_state == int(T.KILL))
            .order_by(_c.tm_last_update, _c.tm_id)
            .limit(validate.non_negative_int(limit, "limit"))
        )
        with self._read() as conn:
            return [_row(r) for r in conn.execute(query).mappings()]

    def mark_killed(self, ids: list[str], reason: str | None = None) -> int:
        for i, row_id in enumerate(ids):
            validate.row_id(row_id, f"list_of_ids[{i}]")
        now = _now()
        with self._write() as conn:
            current = self._select_rows(conn, ids, [_c.tm_id, _c.tm_transfer_state], lock=True)
            for row_id, row in current.items():
                state = T(row["tm_transfer_state"])
                if state not in (T.KILL, T.KILLED):
                    raise TransitionError(row_id, state.name, T.KILLED.name)
            todo = [i for i, r in current.items() if r["tm_transfer_state"] == int(T.KILL)]
            for chunk in _chunks(todo):
                conn.execute(
                    update(transfers)
                    .where(_c.tm_id.in_(chunk))
                    .values(
                        tm_transfer_state=int(T.KILLED),
                        tm_transfer_failure_reason=_reason(reason) if reason is not None else _c.tm_transfer_failure_reason,
                        tm_last_update=now,
                        tm_end_time=now,
                    )
                )
        return len(todo)

    def retry_failed(self, *, task: str | None = None, ids: list[str] | None = None, owner: str | None = None) -> int:
        now = _now()
        with self._write() as conn:
            wanted, found = self._target_ids(conn, task, ids, owner, [_c.tm_id, _c.tm_username, _c.tm_transfer_state])
            todo = [i for i in wanted if i in found and T(found[i]["tm_transfer_state"]) in (T.FAILED, T.KILLED)]
            for chunk in _chunks(todo):
                conn.execute(
                    update(transfers)
                    .where(_c.tm_id.in_(chunk))
                    .values(
                        tm_transfer_state=int(T.NEW),
                        tm_aso_worker=None,
                        tm_transfer_retry_count=0,
                        tm_transfer_failure_reason=None,
                        tm_fts_id=None,
                        tm_fts_instance=None,
                        tm_end_time=None,
                        tm_last_update=now,
                    )
                )
        return len(todo)

    # -- publication ---------------------------------------------------------------------
    def acquire_publication(self, *, worker: str) -> int:
        validate.worker(worker)
        with self._write() as conn:
            return conn.execute(
                update(transfers)
                .where(
                    _c.tm_aso_worker == worker,
                    _c.tm_transfer_state == int(T.DONE),
                    _c.tm_publish == 1,
                    _c.tm_publication_state.in_([int(P.NEW), int(P.RETRY)]),
                )
                .values(tm_publication_state=int(P.ACQUIRED), tm_last_update=_now())
            ).rowcount

    def acquired_publication(self, user: str | None = None, limit: int = 100000, *, worker: str) -> list[dict[str, Any]]:
        validate.worker(worker)
        query = select(transfers).where(
            _c.tm_publication_state == int(P.ACQUIRED),
            _c.tm_aso_worker == worker,
            _c.tm_transfer_state == int(T.DONE),
        )
        if user is not None:
            query = query.where(_c.tm_username == validate.username(user))
        query = query.order_by(_c.tm_username, _c.tm_taskname, _c.tm_end_time, _c.tm_id).limit(
            validate.non_negative_int(limit, "limit")
        )
        with self._read() as conn:
            return [_row(r) for r in conn.execute(query).mappings()]

    def update_publication(self, updates: list[PublicationUpdate], *, worker: str) -> UpdateResult:
        validate.worker(worker)
        _check_batch_ids([u.id for u in updates])
        parsed = []
        for i, u in enumerate(updates):
            state = P.parse(u.state, f"list_of_publication_state[{i}]")
            inc = validate.non_negative_int(u.retry_increment, f"list_of_retry_value[{i}]", MAX_RETRY_LIMIT)
            if u.publish_flag not in (None, 0, 1) or isinstance(u.publish_flag, bool):
                raise ValidationError(f"list_of_publish_flag[{i}]", "expected 0 or 1")
            parsed.append((u, state, inc))
        result = UpdateResult()
        now = _now()
        with self._write() as conn:
            current = self._select_rows(conn, [u.id for u, *_ in parsed], [_c.tm_id, _c.tm_publication_state], lock=True)
            params = []
            for u, state, inc in parsed:
                row = current.get(u.id)
                if row is None:
                    result.skipped.append({"id": u.id, "state": None, "reason": "no such transfer"})
                    continue
                now_state = P(row["tm_publication_state"])
                if now_state == state:
                    result.skipped.append({"id": u.id, "state": now_state.name, "reason": f"already {state.name}"})
                    continue
                if state not in PUBLICATION_TRANSITIONS[now_state]:
                    raise TransitionError(u.id, now_state.name, state.name, kind="publication")
                params.append(
                    {
                        "b_id": u.id,
                        "b_state": int(state),
                        "b_reason": _reason(u.reason),
                        "b_inc": inc,
                        "b_block": u.block_name,
                        "b_publish": u.publish_flag,
                        "b_now": now,
                    }
                )
                result.updated.append(u.id)
            if params:
                conn.execute(
                    update(transfers)
                    .where(_c.tm_id == bindparam("b_id"))
                    .values(
                        tm_publication_state=bindparam("b_state"),
                        tm_publication_failure_reason=func.coalesce(bindparam("b_reason"), _c.tm_publication_failure_reason),
                        tm_publication_retry_count=_c.tm_publication_retry_count + bindparam("b_inc"),
                        tm_dbs_blockname=func.coalesce(bindparam("b_block"), _c.tm_dbs_blockname),
                        tm_publish=func.coalesce(bindparam("b_publish"), _c.tm_publish),
                        tm_last_update=bindparam("b_now"),
                    )
                    .execution_options(synchronize_session=False),
                    params,
                )
        return result

    def retry_publication(self, *, task: str | None = None, ids: list[str] | None = None, owner: str | None = None) -> int:
        with self._write() as conn:
            wanted, found = self._target_ids(conn, task, ids, owner, [_c.tm_id, _c.tm_username, _c.tm_publication_state])
            todo = [i for i in wanted if i in found and found[i]["tm_publication_state"] == int(P.FAILED)]
            for chunk in _chunks(todo):
                conn.execute(
                    update(transfers)
                    .where(_c.tm_id.in_(chunk))
                    .values(
                        tm_publication_state=int(P.NEW),
                        tm_publication_retry_count=0,
                        tm_publication_failure_reason=None,
                        tm_last_update=_now(),
                    )
                )
        return len(todo)

    # -- tasks and metadata --------------------------------------------------------------
    def get_task(self, task: str) -> dict[str, Any] | None:
        validate.taskname(task)
        with self._read() as conn:
            row = conn.execute(select(tasks).where(tasks.c.tm_taskname == task)).mappings().first()
        return dict(row) if row else None

    def upsert_tasks(self, items: list[dict[str, Any]]) -> int:
        now = _now()
        clean = []
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise ValidationError(f"tasks[{i}]", "expected an object")
            unknown = set(item) - set(TASK_COLUMNS)
            if unknown:
                raise ValidationError(f"tasks[{i}].{sorted(unknown)[0]}", "unknown task field")
            validate.taskname(item.get("tm_taskname"), f"tasks[{i}].tm_taskname")
            if item["tm_taskname"] in seen:
                raise ValidationError(f"tasks[{i}].tm_taskname", f"same task as tasks[{seen[item['tm_taskname']]}]")
            seen[item["tm_taskname"]] = i
            validate.username(item.get("tm_username"), f"tasks[{i}].tm_username")
            for key, limit in (("tm_task_status", 50), ("tm_publish_name", 500), ("tm_publish_dbs_url", 500)):
                _short(item.get(key), f"tasks[{i}].{key}", limit)
            for key in ("tm_last_publication", "tm_creation_time"):
                if item.get(key) is not None:
                    validate.non_negative_int(item[key], f"tasks[{i}].{key}")
            # null for a column that cannot be empty means "not given": keep the default
            # (or the stored value), rather than fail the whole batch in the database
            item = {k: v for k, v in item.items() if not (v is None and k in ("tm_task_status", "tm_creation_time"))}
            clean.append(item)
        with self._write() as conn:
            names = [t["tm_taskname"] for t in clean]
            known = set()
            for chunk in _chunks(names):
                known.update(conn.execute(select(tasks.c.tm_taskname).where(tasks.c.tm_taskname.in_(chunk))).scalars())
            new = [{"tm_task_status": "SUBMITTED", "tm_creation_time": now, **t} for t in clean if t["tm_taskname"] not in known]
            if new:
                conn.execute(insert(tasks), _uniform(new, TASK_COLUMNS))
            for t in clean:
                if t["tm_taskname"] in known:
                    values = {k: v for k, v in t.items() if k != "tm_taskname"}
                    if values:
                        conn.execute(update(tasks).where(tasks.c.tm_taskname == t["tm_taskname"]).values(values))
        return len(clean)

    def update_last_publication(self, task: str, when: int | None = None) -> int:
        """Record a task's last publication; the number of tasks changed (0: no such task)."""
        validate.taskname(task)
        when = _now() if when is None else validate.non_negative_int(when, "publicationtime")
        with self._write() as conn:
            return conn.execute(update(tasks).where(tasks.c.tm_taskname == task).values(tm_last_publication=when)).rowcount

    def put_file_metadata(self, entries: list[dict[str, Any]]) -> int:
        now = _now()
        rows = []
        seen: dict[str, int] = {}
        for i, e in enumerate(entries):
            if not isinstance(e, dict):
                raise ValidationError(f"[{i}]", "expected an object")
            lfn = validate.lfn(e.get("lfn"), f"[{i}].lfn")
            if lfn in seen:
                raise ValidationError(f"[{i}].lfn", f"same LFN as [{seen[lfn]}]")
            seen[lfn] = i
            validate.taskname(e.get("taskname"), f"[{i}].taskname")
            if not isinstance(e.get("metadata"), dict):
                raise ValidationError(f"[{i}].metadata", "expected an object")
            rows.append({"fmd_lfn": lfn, "fmd_taskname": e["taskname"], "fmd_metadata": json.dumps(e["metadata"], sort_keys=True), "fmd_update_time": now})
        with self._write() as conn:
            for chunk in _chunks([r["fmd_lfn"] for r in rows]):
                conn.execute(file_metadata.delete().where(file_metadata.c.fmd_lfn.in_(chunk)))
            if rows:
                conn.execute(insert(file_metadata), rows)
        return len(rows)

    def get_file_metadata(self, lfns: list[str]) -> dict[str, dict[str, Any]]:
        for i, lfn in enumerate(lfns):
            validate.lfn(lfn, f"lfnList[{i}]")
        out: dict[str, dict[str, Any]] = {}
        with self._read() as conn:
            for chunk in _chunks(list(lfns)):
                for r in conn.execute(select(file_metadata).where(file_metadata.c.fmd_lfn.in_(chunk))).mappings():
                    out[r["fmd_lfn"]] = json.loads(r["fmd_metadata"])
        return out


def _free_or_mine(worker: str):
    """A NEW row this worker may take: nobody's yet, or injected for this worker by name
    (CRAB's asoworker at injection pins a row to one ASO host)."""
    return or_(_c.tm_aso_worker.is_(None), _c.tm_aso_worker == worker)


def _short(value: Any, field: str, limit: int) -> None:
    """A string that fits its column (PostgreSQL would refuse it with a server error)."""
    if value is not None and (not isinstance(value, str) or len(value) > limit):
        raise ValidationError(field, f"expected a string of at most {limit} characters")


def _check_batch_ids(ids: list[str]) -> None:
    """Every id well-formed and present once: a batch names each row a single time."""
    seen: set[str] = set()
    for i, row_id in enumerate(ids):
        validate.row_id(row_id, f"list_of_ids[{i}]")
        if row_id in seen:
            raise ValidationError(f"list_of_ids[{i}]", f"{row_id} appears twice in one update")
        seen.add(row_id)


def _uniform(rows: Iterable[dict[str, Any]], columns: list[str]) -> list[dict[str, Any]]:
    """executemany wants every row to carry the same keys."""
    return [{c: r.get(c) for c in columns} for r in rows]
