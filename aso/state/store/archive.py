"""Finished rows out of the live table: moved to filetransfersdb_history, or deleted.

Rucio keeps its requests table small by moving finished requests to requests_history; a
state database that keeps every finished row forever makes the status page's totals, the
metrics and every backup grow without end. ``aso archive`` calls :meth:`Archive.archive`.

What may go is one predicate, :data:`aso.state.schema.FINISHED_ROWS` (transfer FAILED or
KILLED, or DONE with publication over), and only rows whose end and last change are both
older than the cut-off. Each batch is one transaction that copies and deletes the same rows
(PostgreSQL: locked with FOR UPDATE SKIP LOCKED, so a row a component or an operator is
changing right now waits for the next run), so killing the command at any instant leaves
every row in exactly one of the two tables, and a second run carries on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from sqlalchemy import delete, func, insert, literal, select, text

from aso import validate
from aso.state.schema import ENDED, FINISHED_ROWS, transfers, transfers_history
from aso.state.store.engine import StoreEngine, _c, _chunks, _now

#: rows per transaction of ``aso archive`` (default of [archive] batch_size)
DEFAULT_BATCH = 10000
MAX_BATCH = 1_000_000


@dataclass
class ArchiveResult:
    """What a run of ``aso archive`` did (or, dry, would do)."""

    mode: str  # "archive" or "purge"
    cutoff: int  # rows that ended and last changed before this time (seconds since the epoch)
    dry_run: bool
    rows: int = 0  # moved (archive), deleted (purge), or that would be (dry run)
    batches: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def _finished_before(cutoff: int) -> tuple:
    """WHERE terms of the rows that may go. ``tm_end_time IS NOT NULL`` word for word and a
    range on tm_end_time: SQLite and PostgreSQL then walk the partial index ix_ftdb_end from
    the oldest end, and never read live rows (which mostly have no end time)."""
    return (text(ENDED), _c.tm_end_time < cutoff, _c.tm_last_update < cutoff, text(FINISHED_ROWS))


class Archive(StoreEngine):
    """Moving or deleting finished rows (``aso archive``)."""

    def archivable(self, cutoff: int) -> int:
        """How many rows :meth:`archive` with this cut-off would take now."""
        with self._read() as conn:
            return conn.execute(select(func.count()).select_from(transfers).where(*_finished_before(cutoff))).scalar()

    def archive(self, cutoff: int, *, purge: bool = False, batch: int = DEFAULT_BATCH, dry_run: bool = False,
                progress: Callable[[int], None] | None = None) -> ArchiveResult:
        """Move (or with ``purge`` delete) every finished row older than ``cutoff``, ``batch``
        rows per transaction; ``progress(n)`` after each batch."""
        cutoff = validate.non_negative_int(cutoff, "cutoff")
        batch = validate.non_negative_int(batch, "batch_size", MAX_BATCH)
        if batch == 0:
            from aso.errors import ValidationError

            raise ValidationError("batch_size", "expected at least 1")
        result = ArchiveResult("purge" if purge else "archive", cutoff, dry_run)
        if dry_run:
            result.rows = self.archivable(cutoff)
            return result
        while True:
            moved = self._archive_batch(cutoff, batch, purge)
            if not moved:
                return result
            result.rows += moved
            result.batches += 1
            if progress is not None:
                progress(moved)

    def _archive_batch(self, cutoff: int, batch: int, purge: bool) -> int:
        pick = select(_c.tm_id).where(*_finished_before(cutoff)).order_by(_c.tm_end_time).limit(batch)
        if not self.is_sqlite:
            # rows being changed right now are left for the next run, never waited on
            pick = pick.with_for_update(skip_locked=True)
        now = _now()
        columns = [c.name for c in transfers.columns]
        with self._write() as conn:
            ids = list(conn.execute(pick).scalars())
            for chunk in _chunks(ids):
                if not purge:
                    conn.execute(insert(transfers_history).from_select(
                        [*columns, "tm_archived_time"],
                        select(*transfers.columns, literal(now)).where(_c.tm_id.in_(chunk))))
                conn.execute(delete(transfers).where(_c.tm_id.in_(chunk)))
        return len(ids)
