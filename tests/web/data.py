"""Rows in every transfer state, moved there through the backend API as the components move
them, and component passes: what the status page tests look at."""

from __future__ import annotations

import time

from aso.state import TransferUpdate
from aso.state.records import PassRecord

FTS = "https://fts.example.org:8446"
XSS = "<script>alert('x')</script> permission denied"
#: per user: task, then how many rows end in each state
PLAN = {
    "alice": ("alice_task_1", {"NEW": 2, "ACQUIRED": 1, "SUBMITTED": 2, "DONE": 3, "RETRY": 1, "FAILED": 1,
                               "KILL": 1, "KILLED": 1}),
    "bob": ("bob_task_1", {"NEW": 1, "SUBMITTED": 1, "DONE": 2, "FAILED": 1}),
}
MULTIHOP = "T2_XX_Source>T1_ZZ_Hop>T2_YY_Dest"


def _request(user: str, task: str, i: int) -> dict:
    return {"username": user, "taskname": task, "source": "T2_XX_Source", "destination": "T2_YY_Dest",
            "source_lfn": f"/store/temp/user/{user}/{task}/out_{i}.root",
            "destination_lfn": f"/store/user/{user}/{task}/out_{i}.root", "filesize": 1_000_000 * (i + 1),
            "checksum": "0000abcd", "publish": 1, "job_id": str(i)}


def totals() -> dict[str, int]:
    out: dict[str, int] = {}
    for _task, counts in PLAN.values():
        for state, n in counts.items():
            out[state] = out.get(state, 0) + n
    return out


def populate(backend) -> dict[str, list[str]]:
    """Fill ``backend`` (service role) as PLAN says; returns the row ids per state."""
    plan: dict[str, list[tuple[str, str, int]]] = {}
    for user, (task, counts) in PLAN.items():
        i = 0
        for state, n in counts.items():
            for _ in range(n):
                plan.setdefault(state, []).append((user, task, i))
                i += 1
    later = [_request(*r) for r in plan["NEW"]]
    first = [_request(*r) for state, rows in plan.items() if state != "NEW" for r in rows]
    result = backend.inject(first)
    ids = {r["source_lfn"]: i for r, i in zip(first, result.inserted, strict=True)}

    def of(state: str) -> list[str]:
        return [ids[_request(*r)["source_lfn"]] for r in plan.get(state, [])]

    assert backend.acquire_transfers(list(PLAN), 1000) == len(first)
    moving = [i for s in ("SUBMITTED", "DONE", "RETRY", "FAILED", "KILL", "KILLED") for i in of(s)]
    backend.update_transfers([
        TransferUpdate(i, "SUBMITTED", fts_id=f"job-{n // 3:04d}", fts_instance=FTS,
                       path=MULTIHOP if n == 0 else None) for n, i in enumerate(moving)])
    backend.update_transfers(
        [TransferUpdate(i, "DONE") for i in of("DONE")]
        + [TransferUpdate(i, "RETRY", reason="TRANSFER Operation timed out", retry_increment=1) for i in of("RETRY")]
        + [TransferUpdate(i, "FAILED", reason=XSS, retry_increment=1) for i in of("FAILED")])
    kills = of("KILL") + of("KILLED")
    backend.request_kill(ids=kills)
    backend.mark_killed(of("KILLED"), "killed by the user")
    ids.update({r["source_lfn"]: i for r, i in zip(later, backend.inject(later).inserted, strict=True)})
    now = time.time()
    backend.record_pass(PassRecord("host-a.example", "transfer", 4242, "t-1", now - 20))
    backend.record_pass(PassRecord("host-a.example", "monitor", 4243, "m-1", now - 65, now - 60, 0, 12, 0,
                                   "monitor: 12 polled"))
    backend.record_pass(PassRecord("host-a.example", "reporter", 4244, "r-1", now - 125, now - 120, 3, 0, 1,
                                   "reporter: state server unreachable"))
    return {state: of(state) for state in PLAN["alice"][1]}
