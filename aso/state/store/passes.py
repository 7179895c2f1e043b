"""Component passes: each instance's latest pass (the health an operator's page shows)."""

from __future__ import annotations

from sqlalchemy import insert, select, update

from aso.state.records import PassRecord
from aso.state.schema import component_passes
from aso.state.store.engine import StoreEngine

_c = component_passes.c


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)


def _s(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000


class Passes(StoreEngine):
    def record_pass(self, record: PassRecord) -> None:
        """Record a pass starting (``finished`` None) or ending: one row per (host,
        component), replaced, except for the time of the instance's last success, which a
        failed or running pass leaves as it was."""
        values = {
            "cp_pid": record.pid, "cp_pass_id": record.pass_id, "cp_started_ms": _ms(record.started),
            "cp_finished_ms": _ms(record.finished), "cp_exit_code": record.exit_code, "cp_files": record.files,
            "cp_failures": record.failures, "cp_summary": record.summary,
        }
        if record.finished is not None and record.exit_code == 0:
            values["cp_last_success_ms"] = _ms(record.finished)
        key = (_c.cp_host == record.host) & (_c.cp_component == record.component)
        with self._write() as conn:
            if conn.execute(update(component_passes).where(key).values(**values)).rowcount == 0:
                conn.execute(insert(component_passes).values(cp_host=record.host, cp_component=record.component,
                                                             **values))

    def component_passes(self) -> list[PassRecord]:
        """Every instance's latest pass, by component then host."""
        with self._read() as conn:
            rows = conn.execute(select(component_passes).order_by(_c.cp_component, _c.cp_host)).mappings().all()
        return [PassRecord(r["cp_host"], r["cp_component"], r["cp_pid"], r["cp_pass_id"], _s(r["cp_started_ms"]),
                           _s(r["cp_finished_ms"]), r["cp_exit_code"], r["cp_files"], r["cp_failures"],
                           r["cp_summary"], _s(r["cp_last_success_ms"])) for r in rows]
