"""Kills (users and operators ask, the retry manager confirms) and the operator's retry
of failed or killed transfers."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, text

from aso import validate
from aso.errors import TransitionError
from aso.state.records import KillResult
from aso.state.schema import KILL_STATE, transfers
from aso.state.store.engine import StoreEngine, T, _c, _now, _reason, _row

_KILLABLE = (T.NEW, T.ACQUIRED, T.SUBMITTED, T.RETRY)


class Kills(StoreEngine):
    """Kill requests, their confirmation, and retries of finished transfers."""

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
            self._update_ids(conn, to_kill, tm_transfer_state=int(T.KILL), tm_last_update=now)
            result.killed.extend(to_kill)
        return result

    def transfers_to_kill(self, limit: int = 5000) -> list[dict[str, Any]]:
        query = (
            select(transfers)
            # the partial index's predicate word for word (SQLite matches it literally): the
            # scan reads the KILL rows only, however many finished rows the table holds
            .where(text(KILL_STATE))
            .order_by(_c.tm_last_update, _c.tm_id)
            .limit(validate.non_negative_int(limit, "limit"))
        )
        with self._read() as conn:
            return [_row(r) for r in conn.execute(query)]

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
            self._update_ids(
                conn, todo,
                tm_transfer_state=int(T.KILLED),
                tm_transfer_failure_reason=_reason(reason) if reason is not None else _c.tm_transfer_failure_reason,
                tm_last_update=now,
                tm_end_time=now,
            )
        return len(todo)

    def retry_failed(self, *, task: str | None = None, ids: list[str] | None = None, owner: str | None = None) -> int:
        now = _now()
        with self._write() as conn:
            wanted, found = self._target_ids(conn, task, ids, owner, [_c.tm_id, _c.tm_username, _c.tm_transfer_state])
            todo = [i for i in wanted if i in found and T(found[i]["tm_transfer_state"]) in (T.FAILED, T.KILLED)]
            self._update_ids(
                conn, todo,
                tm_transfer_state=int(T.NEW),
                tm_aso_worker=None,
                tm_transfer_retry_count=0,
                tm_transfer_failure_reason=None,
                tm_fts_id=None,
                tm_fts_instance=None,
                tm_path=None,
                tm_end_time=None,
                tm_last_update=now,
            )
        return len(todo)
