"""The store's engine: connections, transactions, migrations, and the helpers every
resource's queries share (chunked IN lists, row conversion, input checks).

:class:`StoreEngine` opens the database (SQLite in WAL mode, or PostgreSQL), applies the
schema's missing migrations and hands out read and write transactions; the resource
modules (``injection``, ``transfers``, ``kills``, ``publication``, ``tasks``) build on it.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, event, func, insert, literal_column, select, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from aso import validate
from aso.errors import BackendUnavailable, FencedError, ValidationError
from aso.state.records import TRANSFER_COLUMNS
from aso.state.requests import DEFAULT_MAX_RETRY
from aso.state.schema import LATEST_VERSION, MIGRATIONS, schema_version, transfers
from aso.state.states import PublicationState, TransferState

CHUNK = 500
#: rows inserted or moved between states by one call after which PostgreSQL's statistics
#: are refreshed (see StoreEngine._refresh_statistics)
ANALYZE_AFTER = 5000
REASON_MAX = 1000
#: bytes of page cache all SQLite connections of a process may hold together (soft limit).
#: 48 MB, not 96: the one writer connection's cache is no longer emptied by other writers,
#: so it fills to the limit (the publisher's peak went from 222 to 266 MB at 96); at 48 the
#: peaks are back where they were and the passes as fast
SQLITE_HEAP_LIMIT = 48 * 2**20
#: how long a SQLite writer waits for the database (or this process's other writers)
SQLITE_BUSY_SECONDS = 60
T = TransferState
P = PublicationState
_c = transfers.c


def _chunks(items: Sequence, size: int = CHUNK) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


#: rows one UPDATE of a whole state changes at most on SQLite (:func:`update_bounded`)
BOUNDED_ROWS = 10_000


def update_bounded(conn: Connection, where: Sequence[Any], values: dict[str, Any], rows: int = BOUNDED_ROWS) -> int:
    """Set ``values`` on every row matching ``where``, in the caller's transaction; answers
    how many changed. On SQLite at most ``rows`` per statement, in rowid order, each
    statement going on from the last rowid the one before changed.

    Inside a transaction SQLite keeps a statement journal of every page a multi-row
    statement changes, and the process's writer keeps its journals in memory: one
    statement over every row (the publisher acquiring 300,000) took the process to 348 MB.
    By rowid, each statement is a seek to where the last stopped in an index on the
    equality columns of ``where`` (a column that must not lead SQLite to another index
    carries a unary ``+``). Acquiring 300,000 rows through the store: 122 MB and 6.3–6.9 s,
    against 340 MB and 4.3–5.2 s for one statement. PostgreSQL journals nothing in the
    component: one statement."""
    if conn.dialect.name != "sqlite":
        return conn.execute(update(transfers).where(*where).values(**values)).rowcount
    rowid = literal_column("rowid")
    total, last = 0, 0
    while True:
        batch = (select(rowid).select_from(transfers).where(*where, rowid > last).order_by(rowid).limit(rows)
                 .scalar_subquery())
        changed = [r[0] for r in conn.execute(update(transfers).where(rowid.in_(batch)).values(**values)
                                              .returning(rowid))]
        total += len(changed)
        if len(changed) < rows:
            return total
        last = max(changed)


#: rows taking the same values below which they are not worth a statement of their own:
#: updates that each carry their own failure reason go row by row in one executemany,
#: not one statement per row
ALIKE_MIN = 4


def _update_alike(conn: Connection, groups: Iterable[list[tuple]],
                  statement_of: Callable[[list[tuple]], tuple[Any, dict[str, Any]]]) -> tuple[list[str], list[tuple]]:
    """Apply groups of parsed updates (tuples whose first item has the row ``id``), each
    group's rows taking the same values, with one guarded ``UPDATE … WHERE tm_id IN
    (:g_ids) … RETURNING tm_id`` per group (``statement_of(group)``: the statement and its
    other parameters). Answers the ids it changed, and the updates left for the row-by-row
    checks: the groups too small to be worth it, and the rows a guard stopped."""
    changed: list[str] = []
    rest: list[tuple] = []
    applied: list[list[tuple]] = []
    for group in groups:
        if len(group) < ALIKE_MIN:
            rest += group
            continue
        statement, params = statement_of(group)
        for ids in _chunks(sorted(item[0].id for item in group)):
            changed += conn.execute(statement, {**params, "g_ids": list(ids)}).scalars()
        applied.append(group)
    if len(changed) < sum(len(group) for group in applied):
        done = set(changed)
        rest += [item for group in applied for item in group if item[0].id not in done]
    return changed, rest


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


_COMPILED: dict[tuple[int, str], Any] = {}


def _compiled(statement, dialect):
    """``statement`` compiled for ``dialect``, once per process (statements handed to
    :meth:`StoreEngine._executemany` are built once, at import)."""
    key = (id(statement), dialect.name)
    compiled = _COMPILED.get(key)
    if compiled is None:
        compiled = _COMPILED[key] = (statement, statement.compile(dialect=dialect))
    return compiled[1]


def _now() -> int:
    return int(time.time())


_STATE_NAMES = {int(s): s.name for s in T}
_PUBLICATION_NAMES = {int(s): s.name for s in P}


def _row(values) -> dict[str, Any]:
    """A transfer row as the API shows it, from a result row of ``select(transfers)``
    (all columns, in the table's order): states by name."""
    row = dict(zip(TRANSFER_COLUMNS, values, strict=True))
    row["tm_transfer_state"] = _STATE_NAMES[row["tm_transfer_state"]]
    row["tm_publication_state"] = _PUBLICATION_NAMES[row["tm_publication_state"]]
    return row


def _reason(value: str | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        value = str(value)
    return value[:REASON_MAX]


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


class StoreEngine:
    """The database under the store: engine, transactions, migrations, shared lookups."""

    def __init__(self, url: str, *, max_retry: int = DEFAULT_MAX_RETRY, publication_max_retry: int = DEFAULT_MAX_RETRY):
        """``max_retry``/``publication_max_retry``: stored in rows whose request gives none
        ([transfer] max_retry and [publisher] max_retry of the host that stores them)."""
        self.url = url
        self.max_retry = max_retry
        self.publication_max_retry = publication_max_retry
        self.is_sqlite = url.startswith("sqlite")
        #: SQLite lets one transaction write at a time, and a writer that finds the database
        #: locked polls for it, sleeping up to 100 ms between tries: threads of one process
        #: queue here instead, and the next one starts the moment the last one commits
        self._sqlite_writer = threading.RLock()
        #: ...all on one connection, whose page cache stays warm: SQLite empties a
        #: connection's cache whenever another connection has written, so writers taking
        #: turns on pooled connections read every page again (720,000 reads in one pass)
        self._sqlite_writer_conn: Connection | None = None
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
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_SECONDS, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            # Let SQLAlchemy's "begin" event issue BEGIN itself, so writers can ask for
            # BEGIN IMMEDIATE and never deadlock upgrading a read lock.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_SECONDS * 1000}")
            # Checkpoint the WAL every 10,000 pages (40 MB), not SQLite's 1,000: a bulk update
            # of 100,000 rows rewrites the same index pages again and again, and each
            # checkpoint copied them into the database file (and synced it) once more; the
            # reporter's pass took 15% less.
            cur.execute("PRAGMA wal_autocheckpoint=10000")
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
            if not self.is_sqlite:
                with self.engine.connect() as conn, conn.begin():
                    yield conn
                return
            # as long as SQLite's own busy timeout: a writer stuck behind another for that
            # long fails as it did when each thread waited on SQLite's lock
            if not self._sqlite_writer.acquire(timeout=SQLITE_BUSY_SECONDS):
                raise BackendUnavailable(f"state database: another thread of this process kept writing "
                                         f"for {SQLITE_BUSY_SECONDS} s")
            try:
                if self._sqlite_writer_conn is None:
                    self._sqlite_writer_conn = self._sqlite_writer_connection()
                conn = self._sqlite_writer_conn
                conn.info["immediate"] = True
                try:
                    with conn.begin():
                        yield conn
                except SQLAlchemyError:
                    # rolled back; a connection an I/O error may have left unusable is not kept
                    self._drop_writer()
                    raise
            finally:
                self._sqlite_writer.release()
        except OperationalError as exc:
            raise BackendUnavailable(f"state database: {exc.orig}") from exc

    def _sqlite_writer_connection(self) -> Connection:
        """The process's SQLite writer connection, its temporary storage in memory.

        Inside an explicit transaction every multi-row UPDATE keeps a statement journal (the
        pages it changes, as they were, to undo that statement alone). Past 64 KB SQLite
        spilled it into a temporary file: a transfer pass wrote 260,000 pages there, half
        its write calls. In memory it counts against the heap limit. Only the writer: on
        the readers, a big ORDER BY (the publisher's 100,000 acquired rows) would sort in
        memory too, and the publisher's peak grew by 40 MB at 150,000 rows."""
        conn = self.engine.connect()
        try:
            conn.connection.driver_connection.execute("PRAGMA temp_store=MEMORY")
        except self.engine.dialect.dbapi.Error as exc:  # the driver's own error: not wrapped by SQLAlchemy
            conn.invalidate()
            conn.close()
            raise BackendUnavailable(f"state database: {exc}") from exc
        return conn

    def _drop_writer(self) -> None:
        with self._sqlite_writer:
            conn, self._sqlite_writer_conn = self._sqlite_writer_conn, None
            if conn is not None:
                with contextlib.suppress(SQLAlchemyError):
                    # discarded, not pooled: a reader must not inherit the writer's settings
                    conn.invalidate()
                    conn.close()

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except OperationalError as exc:
            raise BackendUnavailable(f"state database: {exc.orig}") from exc

    def _refresh_statistics(self, changed: int) -> None:
        """PostgreSQL: ANALYZE the transfers table after a statement moved ``changed`` rows
        between states (at least ANALYZE_AFTER). The planner otherwise keeps believing, until
        autovacuum comes by, that a state it saw empty still is, and answers each user's read
        of that state from an index it must walk from end to end (per user: quadratic over a
        pass). SQLite plans from the schema alone."""
        if not self.is_sqlite and changed >= ANALYZE_AFTER:
            with self._write() as conn:
                conn.execute(text(f"ANALYZE {transfers.name}"))

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
        self._drop_writer()
        self.engine.dispose()

    def drop_all(self) -> None:
        """Remove every table (tests and ``aso`` maintenance only)."""
        from aso.state.schema import metadata

        with self._write() as conn:
            metadata.drop_all(conn)

    # -- helpers -------------------------------------------------------------------------
    def _fence(self, conn: Connection, worker: str, generation: int | None) -> None:
        """Refuse (FencedError) a pipeline write of ``worker`` whose ``generation`` is not
        its current one, inside the write's own transaction. The worker's row is read
        under a share lock, so a takeover (which updates it) waits for the write to end or
        the write sees the new generation: never a write after its rows moved. None: no
        check (callers that do not heartbeat)."""
        if generation is None:
            return
        from aso.state.schema import workers

        generation = validate.non_negative_int(generation, "generation", validate.MAX_INT32)
        query = select(workers.c.w_generation).where(workers.c.w_worker == worker)
        if not self.is_sqlite:
            query = query.with_for_update(read=True)
        current = conn.execute(query).scalar()
        if current is not None and current != generation:
            raise FencedError(worker, generation, current)

    @staticmethod
    def _update_ids(conn: Connection, ids: Sequence[str], **values: Any) -> None:
        """Set ``values`` on the rows ``ids``: one UPDATE per chunk of ids, so IN lists stay
        under the databases' parameter limits."""
        for chunk in _chunks(list(ids)):
            conn.execute(update(transfers).where(_c.tm_id.in_(chunk)).values(**values))

    @staticmethod
    def _executemany(conn: Connection, statement, params: list[dict[str, Any]]) -> int:
        """Run ``statement`` once per parameter set in ``params`` as one driver-level
        executemany, and answer the rows it changed. The statement is compiled once per
        dialect and the driver binds each row's values itself: through SQLAlchemy every
        row's parameters were processed in Python, which was most of a 100,000-row bulk
        update's cost. Binds the statement names with a default value (a literal in it)
        keep that value."""
        compiled = _compiled(statement, conn.dialect)
        defaults = compiled.params
        if compiled.positional:
            names = compiled.positiontup
            rows = [tuple(p[n] if n in p else defaults[n] for n in names) for p in params]
        else:
            rows = [{**defaults, **p} for p in params]
        if not rows:
            return 0
        return conn.exec_driver_sql(compiled.string, rows).rowcount

    def _select_rows(self, conn: Connection, ids: Sequence[str], columns=None, lock: bool = False,
                     tuples: bool = False) -> dict[str, Any]:
        """The rows ``ids`` by id (``columns`` of them, the id first); as mappings, or as
        plain tuples in ``columns``' order with ``tuples`` (cheaper for big batches)."""
        cols = columns or [transfers]
        found: dict[str, Any] = {}
        for chunk in _chunks(sorted(set(ids))):
            query = select(*cols).where(_c.tm_id.in_(chunk))
            if lock:
                query = self._for_update(query)
            if tuples:
                for r in conn.execute(query):
                    found[r[0]] = r
            else:
                for r in conn.execute(query).mappings():
                    found[r["tm_id"]] = r
        return found

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
