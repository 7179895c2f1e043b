"""Heartbeats, membership and takeover: several hosts sharing one state backend.

Each component instance heartbeats at the start of its passes (and during long ones). A
worker (an installation's ``[aso] worker``) all of whose instances have been silent for
longer than the caller's timeout is declared dead by the next heartbeat of another worker,
in that heartbeat's transaction: its generation goes up (its writes with the old one are
fenced from then on) and its unfinished rows go, user by user, to their rendezvous owner
among the live workers (:mod:`aso.state.shares`). Takeovers are serialised (an advisory
lock on PostgreSQL, the write transaction on SQLite) so two hosts never both take over the
same worker.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, text, update

from aso import validate
from aso.state.records import (
    MAX_HEARTBEAT_TIMEOUT,
    WORKER_LIVE,
    WORKER_TAKEN_OVER,
    Heartbeat,
    Instance,
    Membership,
    TakenOver,
)
from aso.state.schema import heartbeats, transfers, workers
from aso.state.shares import shares
from aso.state.store.engine import P, StoreEngine, T, _c, _chunks, _now

#: pg_advisory_xact_lock key of heartbeats (7472231: migrations, 7472232: throttling)
TAKEOVER_LOCK = 7472233
_h = heartbeats.c
_w = workers.c
#: what a dead worker leaves unfinished, and so hands over: rows in flight, waiting to be
#: retried or killed, pinned to it while NEW, and DONE rows not yet published
_UNFINISHED = or_(
    _c.tm_transfer_state.in_([int(T.NEW), int(T.ACQUIRED), int(T.SUBMITTED), int(T.KILL), int(T.RETRY)]),
    and_(_c.tm_transfer_state == int(T.DONE),
         _c.tm_publication_state.in_([int(P.NEW), int(P.ACQUIRED), int(P.RETRY)])),
)


def _ms() -> int:
    return int(time.time() * 1000)


class Heartbeats(StoreEngine):
    def heartbeat(self, beat: Heartbeat, *, worker: str) -> Membership:
        """Record ``beat`` of an instance of ``worker``, take over every worker that has
        gone silent, and answer with the membership of the beat's component."""
        validate.worker(worker)
        now = _ms()
        cutoff = now - beat.timeout * 1000
        with self._write() as conn:
            if not self.is_sqlite:
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": TAKEOVER_LOCK})
            key = and_(_h.hb_worker == worker, _h.hb_component == beat.component, _h.hb_host == beat.host,
                       _h.hb_pid == beat.pid)
            if conn.execute(update(heartbeats).where(key).values(hb_heartbeat_ms=now)).rowcount == 0:
                conn.execute(insert(heartbeats).values(hb_worker=worker, hb_component=beat.component,
                                                       hb_host=beat.host, hb_pid=beat.pid,
                                                       hb_started_ms=int(beat.started * 1000), hb_heartbeat_ms=now))
            # earlier processes of this instance's place, silent: dead, and not worth listing
            conn.execute(delete(heartbeats).where(
                _h.hb_worker == worker, _h.hb_component == beat.component, _h.hb_host == beat.host,
                _h.hb_pid != beat.pid, _h.hb_heartbeat_ms < cutoff))
            generation = self._join(conn, worker)
            alive = set(conn.execute(select(_h.hb_worker).where(_h.hb_heartbeat_ms >= cutoff).distinct()).scalars())
            alive.add(worker)
            candidates = conn.execute(select(_w.w_worker).where(_w.w_state == WORKER_LIVE, _w.w_worker != worker))
            dead = sorted(set(candidates.scalars()) - alive)
            taken = [self._take_over(conn, name, worker, sorted(alive), now) for name in dead]
            live = set(conn.execute(select(_h.hb_worker).where(_h.hb_component == beat.component,
                                                               _h.hb_heartbeat_ms >= cutoff).distinct()).scalars())
            live.add(worker)
        return Membership(worker, generation, sorted(live), taken)

    @staticmethod
    def _join(conn: Any, worker: str) -> int:
        """The worker's current generation; a new worker starts at 1, a taken-over one
        that heartbeats again is live again (its old rows stay with their new owners)."""
        row = conn.execute(select(_w.w_generation, _w.w_state).where(_w.w_worker == worker)).first()
        if row is None:
            conn.execute(insert(workers).values(w_worker=worker, w_generation=1, w_state=WORKER_LIVE))
            return 1
        if row.w_state != WORKER_LIVE:
            conn.execute(update(workers).where(_w.w_worker == worker).values(w_state=WORKER_LIVE))
        return int(row.w_generation)

    def _take_over(self, conn: Any, dead: str, by: str, alive: list[str], now_ms: int) -> TakenOver:
        """Fence ``dead`` (generation + 1) and give its unfinished rows, per user, to their
        owners among ``alive``: one UPDATE per owner and chunk of users."""
        generation = int(conn.execute(select(_w.w_generation).where(_w.w_worker == dead)).scalar()) + 1
        conn.execute(update(workers).where(_w.w_worker == dead).values(
            w_generation=generation, w_state=WORKER_TAKEN_OVER, w_taken_over_ms=now_ms, w_taken_over_by=by))
        now = _now()
        # a publication the dead worker had acquired is published by its new owner's publisher
        conn.execute(update(transfers).where(
            _c.tm_aso_worker == dead, _c.tm_transfer_state == int(T.DONE),
            _c.tm_publication_state == int(P.ACQUIRED)).values(tm_publication_state=int(P.NEW), tm_last_update=now))
        users = list(conn.execute(select(_c.tm_username).where(_c.tm_aso_worker == dead, _UNFINISHED).distinct()).scalars())
        rows = 0
        for owner, owned in shares(users, alive).items():
            for chunk in _chunks(owned):
                rows += conn.execute(
                    update(transfers)
                    .where(_c.tm_aso_worker == dead, _c.tm_username.in_(chunk), _UNFINISHED)
                    .values(tm_aso_worker=owner, tm_last_update=now)
                    .execution_options(synchronize_session=False)
                ).rowcount
        return TakenOver(dead, by, generation, rows, len(users))

    def instances(self, timeout: int) -> list[Instance]:
        """Every instance's last heartbeat, live if within ``timeout`` seconds, with its
        worker's generation and state; by worker, component, host, pid."""
        timeout = validate.non_negative_int(timeout, "timeout", MAX_HEARTBEAT_TIMEOUT)
        cutoff = _ms() - timeout * 1000
        query = (
            select(heartbeats, _w.w_generation, _w.w_state, _w.w_taken_over_ms, _w.w_taken_over_by)
            .select_from(heartbeats.outerjoin(workers, _w.w_worker == _h.hb_worker))
            .order_by(_h.hb_worker, _h.hb_component, _h.hb_host, _h.hb_pid)
        )
        with self._read() as conn:
            rows = conn.execute(query).mappings().all()
        return [Instance(r["hb_worker"], r["hb_host"], r["hb_component"], r["hb_pid"], r["hb_started_ms"] / 1000,
                         r["hb_heartbeat_ms"] / 1000, r["hb_heartbeat_ms"] >= cutoff, int(r["w_generation"] or 0),
                         r["w_state"] or WORKER_LIVE,
                         None if r["w_taken_over_ms"] is None else r["w_taken_over_ms"] / 1000, r["w_taken_over_by"])
                for r in rows]

    def generation_of(self, worker: str) -> int | None:
        """The worker's current generation (None: it never heartbeat)."""
        with self._read() as conn:
            value = conn.execute(select(func.max(_w.w_generation)).where(_w.w_worker == validate.worker(worker))).scalar()
        return None if value is None else int(value)
