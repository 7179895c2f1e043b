"""Publication: the publisher's acquire/read/update of a row's publication state, and
the operator's retry."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, func, select, text, update

from aso import validate
from aso.errors import TransitionError, ValidationError
from aso.state.records import PublicationUpdate, UpdateResult
from aso.state.requests import MAX_RETRY_LIMIT
from aso.state.schema import transfers
from aso.state.states import PUBLICATION_TRANSITIONS
from aso.state.store.engine import (
    P,
    StoreEngine,
    T,
    _c,
    _check_batch_ids,
    _now,
    _reason,
    _row,
    _short,
    _update_alike,
    update_bounded,
)


class Publication(StoreEngine):
    """The publication state of transferred files."""

    def acquire_publication(self, *, worker: str, generation: int | None = None) -> int:
        validate.worker(worker)
        with self._write() as conn:
            self._fence(conn, worker, generation)
            if self.is_sqlite:
                # (worker, transfer state), walked in rowid order a statement at a time; a
                # unary + keeps the other two off the indexes (else SQLite took (worker,
                # publication state, user) and lost the rowid order: 7 s, not 5, at 300,000)
                rest = (text("+tm_publish = 1"), text(f"+tm_publication_state IN ({int(P.NEW)}, {int(P.RETRY)})"))
            else:
                rest = (_c.tm_publish == 1, _c.tm_publication_state.in_([int(P.NEW), int(P.RETRY)]))
            return update_bounded(conn, [
                _c.tm_aso_worker == worker,
                _c.tm_transfer_state == int(T.DONE),
                *rest,
            ], {"tm_publication_state": int(P.ACQUIRED), "tm_last_update": _now()})

    def acquired_publication(self, user: str | None = None, limit: int = 100000, *, worker: str,
                             after_user: str | None = None) -> list[dict[str, Any]]:
        validate.worker(worker)
        query = select(transfers).where(
            _c.tm_publication_state == int(P.ACQUIRED),
            _c.tm_aso_worker == worker,
            _c.tm_transfer_state == int(T.DONE),
        )
        if user is not None:
            query = query.where(_c.tm_username == validate.username(user))
        if after_user is not None:
            # a page of the publisher's pass: the (worker, state, user) index walks on from
            # the last user it finished, so each page costs its own rows, not all before it
            query = query.where(_c.tm_username > validate.username(after_user, "after_username"))
        query = query.order_by(_c.tm_username, _c.tm_taskname, _c.tm_end_time, _c.tm_id).limit(
            validate.non_negative_int(limit, "limit")
        )
        with self._read() as conn:
            return [_row(r) for r in conn.execute(query)]

    def update_publication(self, updates: list[PublicationUpdate], *, worker: str,
                           generation: int | None = None) -> UpdateResult:
        validate.worker(worker)
        _check_batch_ids([u.id for u in updates])
        parsed = []
        for i, u in enumerate(updates):
            state = P.parse(u.state, f"list_of_publication_state[{i}]")
            inc = validate.non_negative_int(u.retry_increment, f"list_of_retry_value[{i}]", MAX_RETRY_LIMIT)
            if u.publish_flag not in (None, 0, 1) or isinstance(u.publish_flag, bool):
                raise ValidationError(f"list_of_publish_flag[{i}]", "expected 0 or 1")
            _short(u.block_name, f"list_of_block_name[{i}]", 1000)
            parsed.append((u, state, inc))
        result = UpdateResult()
        now = _now()
        with self._write() as conn:
            self._fence(conn, worker, generation)
            result.updated, parsed = _update_grouped(conn, parsed, now)
            current = self._select_rows(conn, [u.id for u, *_ in parsed], [_c.tm_id, _c.tm_publication_state], lock=True,
                                        tuples=True) if parsed else {}
            params = []
            for u, state, inc in parsed:
                row = current.get(u.id)
                if row is None:
                    result.skipped.append({"id": u.id, "state": None, "reason": "no such transfer"})
                    continue
                now_state = P(row[1])
                if now_state == state:
                    result.skipped.append({"id": u.id, "state": now_state.name, "reason": f"already {state.name}"})
                    continue
                if state not in PUBLICATION_TRANSITIONS[now_state]:
                    raise TransitionError(u.id, now_state.name, state.name, kind="publication")
                params.append({"b_id": u.id, **_update_values(u, state, inc, now)})
                result.updated.append(u.id)
            if params:
                params.sort(key=lambda p: p["b_id"])  # the primary-key B-tree in order
                self._executemany(conn, _UPDATE_PUBLICATION, params)
        return result

    def retry_publication(self, *, task: str | None = None, ids: list[str] | None = None, owner: str | None = None) -> int:
        with self._write() as conn:
            wanted, found = self._target_ids(conn, task, ids, owner, [_c.tm_id, _c.tm_username, _c.tm_publication_state])
            todo = [i for i in wanted if i in found and found[i]["tm_publication_state"] == int(P.FAILED)]
            self._update_ids(
                conn, todo,
                tm_publication_state=int(P.NEW),
                tm_publication_retry_count=0,
                tm_publication_failure_reason=None,
                tm_last_update=_now(),
            )
        return len(todo)


def _update_values(u: PublicationUpdate, state: P, inc: int, now: int) -> dict[str, Any]:
    """The parameters of one row's update to ``state`` (of _UPDATE_VALUES)."""
    return {"b_state": int(state), "b_reason": _reason(u.reason), "b_inc": inc, "b_block": u.block_name,
            "b_publish": u.publish_flag, "b_now": now}


def _update_grouped(conn, parsed: list, now: int) -> tuple[list[str], list]:
    """Apply the updates that take the same values a group at a time: one UPDATE of the
    group's rows in a state the new one may follow (a block's files going DONE), answering
    the ids it changed. Answers those and the updates left, whose rows the row-by-row
    checks must see: a repeat (already in that state), a transition not allowed (which
    fails the whole batch, as before), a row that does not exist."""
    groups: dict[tuple, list] = {}
    for item in parsed:
        u, state, inc = item
        groups.setdefault((state, inc, u.reason, u.block_name, u.publish_flag), []).append(item)

    def statement_of(group: list) -> tuple:
        u, state, inc = group[0]
        return _UPDATE_GROUP, {**_update_values(u, state, inc, now), "g_from": _CAN_PRECEDE[state]}

    return _update_alike(conn, groups.values(), statement_of)


#: the states each publication state may follow (itself excepted: a repeat is no change)
_CAN_PRECEDE: dict[P, list[int]] = {
    target: sorted(int(s) for s, nexts in PUBLICATION_TRANSITIONS.items() if target in nexts and s != target)
    for target in P
}

#: what an update of a row's publication state sets (parameters: _update_values)
_UPDATE_VALUES = {
    "tm_publication_state": bindparam("b_state"),
    "tm_publication_failure_reason": func.coalesce(bindparam("b_reason"), _c.tm_publication_failure_reason),
    "tm_publication_retry_count": _c.tm_publication_retry_count + bindparam("b_inc"),
    "tm_dbs_blockname": func.coalesce(bindparam("b_block"), _c.tm_dbs_blockname),
    "tm_publish": func.coalesce(bindparam("b_publish"), _c.tm_publish),
    "tm_last_update": bindparam("b_now"),
}

#: the bulk update of rows' publication states (Publication.update_publication), one
#: parameter set per row, built once so that it compiles once
_UPDATE_PUBLICATION = update(transfers).where(_c.tm_id == bindparam("b_id")).values(_UPDATE_VALUES)

#: a group of rows taking the same values, each only from a state the new one may follow;
#: the state term is written so that no index serves it (the primary key must: see
#: aso.state.store.transfers._GROUP_GUARD)
_UPDATE_GROUP = (
    update(transfers)
    .where(_c.tm_id.in_(bindparam("g_ids", expanding=True)),
           (_c.tm_publication_state + 0).in_(bindparam("g_from", expanding=True)))
    .values(_UPDATE_VALUES)
    .returning(_c.tm_id)
)
