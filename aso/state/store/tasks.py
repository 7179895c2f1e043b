"""Tasks (owner, status, last publication) and per-file metadata for publication."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import insert, select, update

from aso import validate
from aso.errors import ValidationError
from aso.state.schema import TASK_COLUMNS, file_metadata, tasks
from aso.state.store.engine import StoreEngine, _chunks, _now, _short


class Tasks(StoreEngine):
    """Tasks and file metadata."""

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


def _uniform(rows: Iterable[dict[str, Any]], columns: list[str]) -> list[dict[str, Any]]:
    """executemany wants every row to carry the same keys."""
    return [{c: r.get(c) for c in columns} for r in rows]
