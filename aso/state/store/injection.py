"""Injection: transfer requests become rows (or re-initialise finished ones), all or nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy.engine import Connection

from aso.errors import ForbiddenError, ValidationError
from aso.state.records import TRANSFER_COLUMNS, InjectResult
from aso.state.requests import transfer_row
from aso.state.schema import tasks, transfers
from aso.state.states import REINJECTABLE, TRANSFER_IN_FLIGHT
from aso.state.store.engine import ANALYZE_AFTER, StoreEngine, T, _batch_gc, _c, _chunks, _now


class Injection(StoreEngine):
    """Inserting transfer requests, and creating the tasks they name."""

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
                # Stored grouped by user and task: every later pass reads and updates a
                # user's rows together, and rows side by side share table pages (a batch
                # interleaving 1,000 users put each user's rows on as many pages as rows).
                conn.execute(insert(transfers),
                             sorted(to_insert, key=lambda r: (r["tm_username"], r["tm_taskname"])))
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
