"""Transfer rows: the user-facing reads, and the pipeline (acquire, update, retry, stuck,
release) each call of which is bound to one worker."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Integer,
    String,
    and_,
    bindparam,
    case,
    column,
    func,
    null,
    or_,
    select,
    text,
    update,
    values,
)

from aso import validate
from aso.errors import TransitionError, ValidationError
from aso.state.records import Acquired, TransferUpdate, UpdateResult
from aso.state.requests import MAX_RETRY_LIMIT, STAGEIN
from aso.state.requests import request_type as _request_type
from aso.state.schema import LIVE_STATES, transfers
from aso.state.states import TRANSFER_TRANSITIONS
from aso.state.store.engine import (
    BOUNDED_ROWS,
    P,
    StoreEngine,
    T,
    _batch_gc,
    _c,
    _check_batch_ids,
    _chunks,
    _now,
    _reason,
    _row,
    _short,
    _update_alike,
    update_bounded,
)
from aso.topology.throttle import Group, ThrottleCounts, ThrottleLimits, allocate, held_back

ACQUIRE_USERS_PER_TRANSACTION = 100
#: allowances per UPDATE of a throttled acquisition (4 parameters each: far under SQLite's
#: 32766 and PostgreSQL's 65535 parameters per statement)
ALLOWANCES_PER_STATEMENT = 2000


def statement_batches(wanted: list[tuple[Any, int]], rows: int, per_statement: int) -> list[list[tuple[Any, int]]]:
    """The acquisition statements for ``wanted`` ((key, rows to take) in order; a key is a
    user or a (user, source, destination)): each statement takes at most ``rows`` rows and
    names at most ``per_statement`` keys. A key wanting more than ``rows`` is split into
    pieces of ``rows`` and a remainder, each a statement of its own (each takes the oldest
    rows the one before left), so no key is twice in one statement. Keys wanting nothing
    are left out.

    On SQLite a statement inside a transaction journals every page it changes until it ends,
    in memory on the writer: one statement taking 300,000 rows (100 users with 3,000 files
    each) took a process from 104 to 251 MB."""
    if rows < 1 or per_statement < 1:
        raise ValueError("rows and per_statement must be at least 1")
    batches: list[list[tuple[Any, int]]] = []
    batch: list[tuple[Any, int]] = []
    size = 0
    for key, n in wanted:
        if n <= 0:
            continue
        if n > rows:
            if batch:
                batches.append(batch)
                batch, size = [], 0
            whole, rest = divmod(n, rows)
            batches += [[(key, rows)] for _ in range(whole)]
            if rest:
                batches.append([(key, rest)])
            continue
        if batch and (size + n > rows or len(batch) >= per_statement):
            batches.append(batch)
            batch, size = [], 0
        batch.append((key, n))
        size += n
    if batch:
        batches.append(batch)
    return batches


#: pg_advisory_xact_lock key of throttled acquisition (7472231 is the migrations')
THROTTLE_LOCK = 7472232
#: the in-flight states, as the literal predicate of the partial index ix_ftdb_inflight:
#: a bound parameter list would not let the planners prove the query implies it
_IN_FLIGHT = text("tm_transfer_state IN (1, 5)")
_TERMINAL_TRANSFER = (T.DONE, T.FAILED, T.KILLED)


class Transfers(StoreEngine):
    """Reads of transfer rows and the transfer pipeline."""

    # -- reads ---------------------------------------------------------------------------
    def get_transfers(self, ids: list[str], owner: str | None = None) -> list[dict[str, Any]]:
        for i, row_id in enumerate(ids):
            validate.row_id(row_id, f"ids[{i}]")
        with self._read() as conn:
            found = self._select_rows(conn, ids, tuples=True)
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
            return [_row(r) for r in conn.execute(query)]

    def statistics(self, *, user: str | None = None, task: str | None = None, owner: str | None = None,
                   request_type: str | None = None) -> list[dict[str, Any]]:
        query = select(
            _c.tm_username, _c.tm_taskname, _c.tm_transfer_state, _c.tm_publication_state, func.count().label("n")
        ).where(*_of_type(request_type)).group_by(_c.tm_username, _c.tm_taskname, _c.tm_transfer_state,
                                                  _c.tm_publication_state)
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

    def state_counts(self) -> dict[tuple[str, str], int]:
        """Rows per (transfer state, publication state) over the whole table, for /metrics:
        one grouped count, an index-only scan of ix_ftdb_publish (it holds both columns),
        grouped in that index's own column order: grouped any other way, SQLite sorted every
        row's entry in a temporary B-tree first (37 s instead of 4 over 10 million rows)."""
        query = select(_c.tm_publish, _c.tm_publication_state, _c.tm_transfer_state, func.count()).group_by(
            _c.tm_publish, _c.tm_publication_state, _c.tm_transfer_state)
        counts: dict[tuple[str, str], int] = {}
        with self._read() as conn:
            for _publish, p, t, n in conn.execute(query):
                key = (T(t).name, P(p).name)
                counts[key] = counts.get(key, 0) + n
        return counts

    def queue_depth(self) -> dict[tuple[str, str], int]:
        """Rows waiting or in flight (NEW, ACQUIRED, SUBMITTED) per (source, destination) site,
        over every worker, for /metrics: a scan of the partial index ix_ftdb_live, whose
        predicate is repeated word for word so both planners match it (finished rows are
        never read)."""
        query = (
            select(_c.tm_source, _c.tm_destination, func.count())
            .where(text(LIVE_STATES))
            .group_by(_c.tm_source, _c.tm_destination)
        )
        with self._read() as conn:
            return {(s, d): n for s, d, n in conn.execute(query)}

    # -- transfer pipeline ---------------------------------------------------------------
    def active_users(self, *, worker: str, request_type: str | None = None) -> list[str]:
        validate.worker(worker)
        kind = _of_type(request_type)
        query = (
            select(_c.tm_username)
            .where(
                or_(
                    and_(_c.tm_transfer_state == int(T.NEW), _free_or_mine(worker)),
                    and_(_c.tm_transfer_state == int(T.ACQUIRED), _c.tm_aso_worker == worker),
                ),
                *kind,
            )
            .distinct()
            .order_by(_c.tm_username)
        )
        with self._read() as conn:
            return list(conn.execute(query).scalars())

    def acquire_transfers(self, users: list[str], limit: int, *, worker: str,
                          limits: ThrottleLimits | None = None, request_type: str | None = None,
                          pinned_only: list[str] | None = None, generation: int | None = None,
                          rows_per_statement: int = BOUNDED_ROWS) -> Acquired:
        """NEW rows of ``users`` → ACQUIRED by ``worker``, at most ``limit`` per user, oldest
        first; with ``limits``, only what the sites and links have room for (see
        :meth:`_acquire_throttled`), and the answer's ``held`` says how many rows wait on them.
        ``request_type`` ('transfer' or 'stagein') takes only rows of that kind. Of the users
        in ``pinned_only`` (other workers' shares), only rows pinned to ``worker`` by name
        are taken. ``generation``: refused (FencedError) unless it is the worker's current one.
        ``rows_per_statement``: the most rows one statement takes (see :func:`statement_batches`)."""
        validate.worker(worker)
        kind = _of_type(request_type)
        limit = validate.non_negative_int(limit, "limit")
        users = [validate.username(u, f"users[{i}]") for i, u in enumerate(users)]
        pinned = {validate.username(u, f"pinned_only[{i}]") for i, u in enumerate(pinned_only or [])}
        users = list(dict.fromkeys(users + sorted(pinned - set(users))))
        if not users or limit == 0:
            return Acquired(0)
        if limits is not None and not limits.is_empty():
            return self._acquire_throttled(users, limit, worker, limits, kind, pinned, generation,
                                           rows_per_statement)
        now = _now()
        total = 0
        wanted = [(user, min(n, limit)) for user, n in self._takeable_counts(users, worker, pinned, kind)]
        # One transaction per statement: a row taken is this worker's whichever statement a
        # crash stops at, and on SQLite a 100k-row transaction held every dirty page (and the
        # ranking's sort) in memory at once, which made acquisition a component's peak.
        for batch in statement_batches(wanted, rows_per_statement, ACQUIRE_USERS_PER_TRANSACTION):
            chunk = [user for user, _ in batch]
            # A user taken whole wants min(its rows, limit), so ranking up to the batch's
            # largest wish takes each one's; a piece of one user's rows is a batch alone.
            # (Rows injected since the count may add to a user's share, never past ``limit``.)
            cap = max(n for _, n in batch)
            with self._write() as conn:
                self._fence(conn, worker, generation)
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
                    .where(*_takeable_new(worker, chunk, pinned, kind))
                    .subquery()
                )
                picked = select(ranked.c.tm_id).where(ranked.c.rn <= cap)
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
                        *self._still_takeable(worker),
                    )
                    # a submission id is planned afresh for every acquisition
                    .values(tm_transfer_state=int(T.ACQUIRED), tm_aso_worker=worker, tm_last_update=now, tm_sid=None)
                    .execution_options(synchronize_session=False)
                )
                total += result.rowcount
        self._refresh_statistics(total)
        return Acquired(total)

    def _takeable_counts(self, users: list[str], worker: str, pinned: set[str], kind: tuple) -> list[tuple[str, int]]:
        """(user, NEW rows ``worker`` may take) of each of ``users`` that has any, in their
        order: one grouped count per chunk of users, on the index by (user, state, worker)."""
        found: dict[str, int] = {}
        with self._read() as conn:
            for chunk in _chunks(users):
                query = (
                    select(_c.tm_username, func.count())
                    .where(*_takeable_new(worker, chunk, pinned, kind))
                    .group_by(_c.tm_username)
                )
                found.update((user, n) for user, n in conn.execute(query))
        return [(user, found[user]) for user in users if found.get(user)]

    def _acquire_throttled(self, users: list[str], limit: int, worker: str, limits: ThrottleLimits,
                           kind: tuple = (), pinned: set[str] = frozenset(), generation: int | None = None,
                           rows_per_statement: int = BOUNDED_ROWS) -> Acquired:
        """Acquisition under limits, in one transaction: count the files in flight (every
        worker) and the users' takeable NEW rows per (user, source, destination), let
        :func:`aso.topology.throttle.allocate` say how many of each group to take, and take
        the oldest rows of each group. On PostgreSQL an advisory lock makes acquirers on
        other hosts wait, so two cannot both fill the same free capacity (SQLite's BEGIN
        IMMEDIATE already serialises writers)."""
        now = _now()
        with self._write() as conn:
            self._fence(conn, worker, generation)
            if not self.is_sqlite:
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": THROTTLE_LOCK})
                conn.execute(text("SET LOCAL enable_nestloop = off"))
            inflight = _inflight_counts(conn)
            waiting: dict[Group, int] = {}
            oldest: dict[Group, int] = {}
            for chunk in _chunks(users):
                query = (
                    select(_c.tm_username, _c.tm_source, _c.tm_destination, func.count(), func.min(_c.tm_creation_time))
                    .where(*_takeable_new(worker, chunk, pinned, kind))
                    .group_by(_c.tm_username, _c.tm_source, _c.tm_destination)
                )
                for user, src, dst, n, first in conn.execute(query):
                    waiting[(user, src, dst)] = n
                    oldest[(user, src, dst)] = first
            alloc = allocate(inflight, waiting, limits, limit, oldest)
            taken = 0
            # one transaction (the counts above hold for all of it), its statements bounded
            for chunk in statement_batches(sorted(alloc.items()), rows_per_statement, ALLOWANCES_PER_STATEMENT):
                result = conn.execute(self._take_oldest(chunk, worker, now, kind, pinned))
                # Python's sqlite3 answers -1 for a statement that starts with WITH: ask SQLite
                taken += conn.execute(text("SELECT changes()")).scalar() if self.is_sqlite else result.rowcount
        held = sum(held_back(inflight, waiting, alloc, limits).values())
        self._refresh_statistics(taken)
        return Acquired(taken, held)

    def _take_oldest(self, allowances, worker: str, now: int, kind: tuple = (), pinned: set[str] = frozenset()):
        """One UPDATE taking the oldest ``n`` takeable NEW rows of each (user, source,
        destination, n) of ``allowances``: a VALUES table joined to the rows, ranked per group."""
        allow = (
            values(column("a_user", String), column("a_source", String), column("a_destination", String),
                   column("a_n", Integer), name="allow")
            .data([(u, s, d, n) for (u, s, d), n in allowances])
            .cte("allow")
        )
        ranked = (
            select(
                _c.tm_id,
                allow.c.a_n,
                func.row_number()
                .over(partition_by=(_c.tm_username, _c.tm_source, _c.tm_destination),
                      order_by=(_c.tm_creation_time, _c.tm_id))
                .label("rn"),
            )
            .select_from(transfers.join(allow, and_(_c.tm_username == allow.c.a_user,
                                                     _c.tm_source == allow.c.a_source,
                                                     _c.tm_destination == allow.c.a_destination)))
            .where(_c.tm_transfer_state == int(T.NEW),
                   _takeable(worker, sorted({u for (u, _, _), _ in allowances}), pinned), *kind)
            .subquery()
        )
        picked = select(ranked.c.tm_id).where(ranked.c.rn <= ranked.c.a_n)
        if not self.is_sqlite:
            picked_rows = picked.subquery()  # a join, not IN (see acquire_transfers)
            key = _c.tm_id == picked_rows.c.tm_id
        else:
            key = _c.tm_id.in_(picked)
        return (
            update(transfers)
            .where(key, *self._still_takeable(worker))
            .values(tm_transfer_state=int(T.ACQUIRED), tm_aso_worker=worker, tm_last_update=now, tm_sid=None)
            .execution_options(synchronize_session=False)
        )

    def _still_takeable(self, worker: str) -> tuple:
        """The re-check of an acquiring UPDATE whose rows come from an id list: NEW and
        free or this worker's. On SQLite the columns carry a unary ``+``, which keeps them off
        the indexes: else SQLite walked ix_ftdb_worker_tstate through every unowned NEW row
        of the table for each chunk of 100 users (quadratic in a pass over 10,000 users)
        instead of looking the picked ids up by primary key."""
        if not self.is_sqlite:
            return _c.tm_transfer_state == int(T.NEW), _free_or_mine(worker)
        return (text(f"+tm_transfer_state = {int(T.NEW)}"),
                text("(+tm_aso_worker IS NULL OR +tm_aso_worker = :takeable_worker)").bindparams(takeable_worker=worker))

    def throttle_counts(self) -> ThrottleCounts:
        """Rows per (user, source, destination) in flight (ACQUIRED or SUBMITTED) and waiting
        (NEW), over every worker: what throttling reckons with, for ``aso status``."""
        with self._read() as conn:
            inflight = _inflight_counts(conn)
            query = (
                select(_c.tm_username, _c.tm_source, _c.tm_destination, func.count())
                # the live-rows index's predicate, word for word: finished rows are never read
                .where(text(LIVE_STATES), _c.tm_transfer_state == int(T.NEW))
                .group_by(_c.tm_username, _c.tm_source, _c.tm_destination)
            )
            waiting = {(u, s, d): n for u, s, d, n in conn.execute(query)}
        return ThrottleCounts(inflight, waiting)

    def acquired_transfers(self, user: str | None = None, limit: int = 10000, *, worker: str,
                           request_type: str | None = None) -> list[dict[str, Any]]:
        validate.worker(worker)
        query = select(transfers).where(_c.tm_transfer_state == int(T.ACQUIRED), _c.tm_aso_worker == worker,
                                        *_of_type(request_type))
        if user is not None:
            query = query.where(_c.tm_username == validate.username(user))
        query = query.order_by(_c.tm_creation_time, _c.tm_id).limit(validate.non_negative_int(limit, "limit"))
        with self._read() as conn:
            return [_row(r) for r in conn.execute(query)]

    def update_transfers(self, updates: list[TransferUpdate], *, worker: str,
                         generation: int | None = None) -> UpdateResult:
        with _batch_gc():
            return self._update_transfers(updates, worker, generation)

    def _update_transfers(self, updates: list[TransferUpdate], worker: str, generation: int | None) -> UpdateResult:
        validate.worker(worker)
        _check_batch_ids([u.id for u in updates])
        parsed = []
        for i, u in enumerate(updates):
            _short(u.fts_id, f"list_of_fts_id[{i}]", 255)
            _short(u.fts_instance, f"list_of_fts_instance[{i}]", 255)
            if u.path is not None:
                _path_text(u.path, f"list_of_path[{i}]")
            state = T.parse(u.state, f"list_of_transfer_state[{i}]")
            expect = T.parse(u.expect_state, f"list_of_expected_state[{i}]") if u.expect_state is not None else None
            inc = validate.non_negative_int(u.retry_increment, f"list_of_retry_value[{i}]", MAX_RETRY_LIMIT)
            parsed.append((u, state, expect, inc))
        result = UpdateResult()
        now = _now()
        with self._write() as conn:
            self._fence(conn, worker, generation)
            result.updated, parsed = self._update_grouped(conn, parsed, worker, now)
            current = self._select_rows(
                conn, [u.id for u, *_ in parsed], [_c.tm_id, _c.tm_transfer_state, _c.tm_fts_id, _c.tm_aso_worker],
                lock=True, tuples=True,
            ) if parsed else {}
            params = []
            for u, state, expect, inc in parsed:
                row = current.get(u.id)
                if row is None:
                    result.skipped.append({"id": u.id, "state": None, "reason": "no such transfer"})
                    continue
                _, now_code, now_fts_id, owner = row
                now_state = T(now_code)
                if owner is not None and owner != worker:
                    # taken over: a returning host's stale hand-offs must not write over the
                    # new owner's rows
                    result.skipped.append({"id": u.id, "state": now_state.name, "reason": f"owned by {owner}"})
                    continue
                if expect is not None and now_state != expect:
                    result.skipped.append({"id": u.id, "state": now_state.name, "reason": f"expected {expect.name}"})
                    continue
                if u.expect_fts_id is not None and now_fts_id != u.expect_fts_id:
                    result.skipped.append({"id": u.id, "state": now_state.name, "reason": f"belongs to FTS job {now_fts_id}, not {u.expect_fts_id}"})
                    continue
                if now_state == state and (u.fts_id is None or u.fts_id == now_fts_id):
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
                params.append({"b_id": u.id, **_update_values(u, target, inc, now)})
                result.updated.append(u.id)
            if params:
                # Walking the primary-key B-tree in order keeps big batches cache-friendly.
                params.sort(key=lambda p: p["b_id"])
                self._executemany(conn, _UPDATE_TRANSFER, params)
        return result

    def _update_grouped(self, conn, parsed: list, worker: str, now: int) -> tuple[list[str], list]:
        """Apply the updates that name the state their rows must be in a group at a time:
        one guarded UPDATE (expected state, this worker or none, the expected FTS job) for
        all the rows taking the same values, such as a chunk's rows going SUBMITTED with its
        FTS job or a job's files going DONE, instead of reading and updating row by row.
        Answers the ids it changed and the updates left: those the row-by-row checks must
        see (no expected state, a kill's special cases) and the rows a guard stopped (a
        repeat, a kill meanwhile, another owner), whose checks then say why."""
        groups: dict[tuple, list] = {}
        rest = []
        for item in parsed:
            u, state, expect, inc = item
            if expect is None or expect == state or expect == T.KILL or state not in TRANSFER_TRANSITIONS[expect]:
                rest.append(item)
                continue
            key = (state, expect, inc, u.reason, u.fts_id, u.fts_instance, u.path, u.expect_fts_id)
            groups.setdefault(key, []).append(item)

        def statement_of(group: list) -> tuple:
            u, state, expect, inc = group[0]
            params = {**_update_values(u, state, inc, now), "g_expect": int(expect), "g_worker": worker}
            if u.expect_fts_id is None:
                return _UPDATE_GROUP, params
            return _UPDATE_GROUP_OF_JOB, {**params, "g_fts_id": u.expect_fts_id}

        changed, left = _update_alike(conn, groups.values(), statement_of)
        return changed, rest + left

    def retry_transfers(self, cooloff: int, *, worker: str, generation: int | None = None) -> int:
        validate.worker(worker)
        cooloff = validate.non_negative_int(cooloff, "time_to")
        now = _now()
        with self._write() as conn:
            self._fence(conn, worker, generation)
            # (worker, state), in rowid order a statement at a time: the unary + keeps
            # SQLite off the index of failing rows by time, where that order is lost
            cooled = (text("+tm_last_update < :cooled").bindparams(cooled=now - cooloff) if self.is_sqlite
                      else _c.tm_last_update < now - cooloff)
            return update_bounded(conn, [
                _c.tm_aso_worker == worker,
                _c.tm_transfer_state == int(T.RETRY),
                cooled,
            ], {
                "tm_transfer_state": int(T.NEW),
                "tm_aso_worker": None,
                "tm_transfer_retry_count": _c.tm_transfer_retry_count + 1,
                "tm_last_update": now,
            })

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
            return [_row(r) for r in conn.execute(query)]

    def release_transfers(self, ids: list[str], *, worker: str, generation: int | None = None) -> int:
        validate.worker(worker)
        for i, row_id in enumerate(ids):
            validate.row_id(row_id, f"list_of_ids[{i}]")
        total = 0
        now = _now()
        with self._write() as conn:
            self._fence(conn, worker, generation)
            for chunk in _chunks(list(ids)):
                total += conn.execute(
                    update(transfers)
                    .where(_c.tm_id.in_(chunk), _c.tm_transfer_state == int(T.ACQUIRED), _c.tm_aso_worker == worker)
                    .values(tm_transfer_state=int(T.NEW), tm_aso_worker=None, tm_last_update=now)
                ).rowcount
        return total


    # -- several hosts: submission ids and in-flight jobs ----------------------------------
    def set_submission_ids(self, sids: dict[str, str], *, worker: str, generation: int | None = None) -> int:
        """Record the submission id (FTS sid) each row was planned into, before its chunk
        is submitted; only rows ACQUIRED by ``worker`` take it. Answers how many took it."""
        validate.worker(worker)
        _check_batch_ids(list(sids))
        for i, sid in enumerate(sids.values()):
            validate.path_part(sid, f"list_of_sid[{i}]")
            _short(sid, f"list_of_sid[{i}]", 64)
        if not sids:
            return 0
        params = [{"s_id": row_id, "s_sid": sid, "s_worker": worker} for row_id, sid in sorted(sids.items())]
        with self._write() as conn:
            self._fence(conn, worker, generation)
            # One guarded UPDATE per row by primary key, as one executemany: the guard is
            # the row's own (ACQUIRED, this worker), so nothing is read first. tm_sid is in
            # no index: each row costs one table-page write.
            return self._executemany(conn, _SET_SID, params)

    def submitted_jobs(self, *, worker: str, request_type: str | None = None) -> list[tuple[str, str, str]]:
        """(user, FTS job id, FTS endpoint) of every job holding rows of ``worker`` in
        SUBMITTED (or KILL with a job): one grouped query on (worker, state)."""
        validate.worker(worker)
        query = (
            select(_c.tm_username, _c.tm_fts_id, _c.tm_fts_instance)
            .where(_c.tm_aso_worker == worker, _c.tm_transfer_state.in_([int(T.SUBMITTED), int(T.KILL)]),
                   _c.tm_fts_id.is_not(None), *_of_type(request_type))
            .distinct()
        )
        with self._read() as conn:
            return sorted((u, j, e or "") for u, j, e in conn.execute(query))

    def transfers_of_jobs(self, fts_ids: list[str], *, worker: str) -> list[dict[str, Any]]:
        """The SUBMITTED (or KILL) rows of ``worker`` in the FTS jobs ``fts_ids``."""
        validate.worker(worker)
        for i, job in enumerate(fts_ids):
            if job is None:
                raise ValidationError(f"list_of_fts_id[{i}]", "is required")
            _short(job, f"list_of_fts_id[{i}]", 255)
        rows: list[dict[str, Any]] = []
        with self._read() as conn:
            for chunk in _chunks(sorted(set(fts_ids))):
                query = select(transfers).where(
                    _c.tm_fts_id.in_(chunk), _c.tm_aso_worker == worker,
                    _c.tm_transfer_state.in_([int(T.SUBMITTED), int(T.KILL)])).order_by(_c.tm_id)
                rows += [_row(r) for r in conn.execute(query)]
        return rows


def _update_values(u: TransferUpdate, target: T, inc: int, now: int) -> dict[str, Any]:
    """The parameters of one row's update to ``target`` (of _UPDATE_VALUES)."""
    return {
        "b_state": int(target),
        "b_reason": _reason(u.reason),
        "b_keep_reason": u.reason is None,
        "b_inc": inc,
        "b_fts_id": u.fts_id,
        "b_fts_instance": u.fts_instance,
        # a new submission records its path; a direct one clears an old path
        "b_path": u.path if u.path is not None or target != T.SUBMITTED else "",
        "b_now": now,
        "b_end": now if target in _TERMINAL_TRANSFER else None,
    }


#: what an update of a row's transfer state sets (parameters: _update_values)
_UPDATE_VALUES = {
    "tm_transfer_state": bindparam("b_state"),
    "tm_transfer_failure_reason": case(
        (bindparam("b_keep_reason"), _c.tm_transfer_failure_reason), else_=bindparam("b_reason")
    ),
    "tm_transfer_retry_count": _c.tm_transfer_retry_count + bindparam("b_inc"),
    "tm_fts_id": func.coalesce(bindparam("b_fts_id"), _c.tm_fts_id),
    "tm_fts_instance": func.coalesce(bindparam("b_fts_instance"), _c.tm_fts_instance),
    "tm_path": case((bindparam("b_path") == "", null()), else_=func.coalesce(bindparam("b_path"), _c.tm_path)),
    "tm_last_update": bindparam("b_now"),
    "tm_end_time": func.coalesce(bindparam("b_end"), _c.tm_end_time),
}

#: the bulk update of rows' transfer states (Transfers.update_transfers), one parameter set
#: per row, built once so that it compiles once
_UPDATE_TRANSFER = update(transfers).where(_c.tm_id == bindparam("b_id")).values(_UPDATE_VALUES)

#: a group of rows taking the same values, each only if it is in the expected state and
#: this worker's (or nobody's), answering the ids it changed (Transfers._update_grouped).
#: The state and worker terms are written so that no index can serve them: as plain
#: comparisons, SQLite chose the (worker, state) index over the primary key and walked
#: every row of the worker in that state, 20 ms per statement instead of 1.
_GROUP_GUARD = (
    _c.tm_id.in_(bindparam("g_ids", expanding=True)),
    _c.tm_transfer_state + 0 == bindparam("g_expect"),
    func.coalesce(_c.tm_aso_worker, bindparam("g_worker")) == bindparam("g_worker"),
)
_UPDATE_GROUP = update(transfers).where(*_GROUP_GUARD).values(_UPDATE_VALUES).returning(_c.tm_id)
#: ...and only if it is in the expected FTS job
_UPDATE_GROUP_OF_JOB = (
    update(transfers).where(*_GROUP_GUARD, _c.tm_fts_id == bindparam("g_fts_id"))
    .values(_UPDATE_VALUES).returning(_c.tm_id)
)


#: one row's submission id, only while the row is ACQUIRED by the worker setting it
_SET_SID = (
    update(transfers)
    .where(_c.tm_id == bindparam("s_id"), _c.tm_transfer_state == int(T.ACQUIRED), _c.tm_aso_worker == bindparam("s_worker"))
    .values(tm_sid=bindparam("s_sid"))
)


def _takeable_new(worker: str, users, pinned: set[str], kind: tuple = ()) -> tuple:
    """The NEW rows of ``users`` (of the request type ``kind`` says) this worker may take:
    what acquisition counts and what it ranks, the same terms in both."""
    return _c.tm_username.in_(users), _c.tm_transfer_state == int(T.NEW), _takeable(worker, users, pinned), *kind


def _takeable(worker: str, users, pinned: set[str]):
    """The NEW rows of ``users`` this worker may take: its own share's free or pinned rows,
    and only the pinned ones of users in ``pinned`` (other workers' shares)."""
    if not pinned:
        return _free_or_mine(worker)
    free = [u for u in users if u not in pinned]
    if not free:
        return _c.tm_aso_worker == worker
    return or_(_c.tm_aso_worker == worker, and_(_c.tm_aso_worker.is_(None), _c.tm_username.in_(free)))


def _inflight_counts(conn) -> dict[Group, int]:
    """Files in flight per (user, source, destination), every worker's: an index-only
    scan of the partial index ix_ftdb_inflight, in its column order."""
    query = (
        select(_c.tm_source, _c.tm_destination, _c.tm_username, func.count())
        .where(_IN_FLIGHT)
        .group_by(_c.tm_source, _c.tm_destination, _c.tm_username)
    )
    return {(u, s, d): n for s, d, u, n in conn.execute(query)}


def _of_type(request_type: str | None) -> tuple:
    """The one request-type filter of the pipeline's reads and acquisitions (a tuple of
    WHERE terms; empty: every row): 'stagein' takes stage-in rows only (aso stager),
    'transfer' everything else (aso transfer: output and log rows)."""
    kind = _request_type(request_type)
    if kind is None:
        return ()
    return (_c.tm_type == STAGEIN,) if kind == STAGEIN else (_c.tm_type != STAGEIN,)


def _free_or_mine(worker: str):
    """A NEW row this worker may take: nobody's yet, or injected for this worker by name
    (CRAB's asoworker at injection pins a row to one ASO host)."""
    return or_(_c.tm_aso_worker.is_(None), _c.tm_aso_worker == worker)


def _path_text(value: str, field: str) -> str:
    """A recorded path: site names joined by '>' (at least two sites, at most 400 characters)."""
    sites = value.split(">") if isinstance(value, str) else []
    if not isinstance(value, str) or len(value) > 400 or len(sites) < 2:
        raise ValidationError(field, f"{str(value)[:100]!r} is not a path of sites (A>B>C)")
    for site in sites:
        validate.site(site, field)
    return value
