"""Fill a state backend with transferred files waiting for publication."""

from __future__ import annotations

import time
import zlib
from hashlib import sha224

from aso.state import StateBackend, TransferUpdate

DATASET = "/Primary/alice-Proc-v1/USER"


def lfn(task: str, i: int) -> str:
    return f"/store/user/alice/{task}/out_{i}.root"


def add_files(
    backend: StateBackend,
    task: str,
    count: int,
    *,
    start: int = 0,
    user: str = "alice",
    metadata: bool = True,
    dataset: str = DATASET,
    task_status: str = "SUBMITTED",
) -> list[str]:
    """Inject ``count`` transferred files flagged for publication; returns their LFNs."""
    lfns = [lfn(task, i) for i in range(start, start + count)]
    now = int(time.time())
    backend.inject(
        [
            {
                "username": user,
                "taskname": task,
                "source": "T2_A",
                "destination": "T2_B",
                "source_lfn": x.replace("/store/user/", "/store/temp/user/"),
                "destination_lfn": x,
                "filesize": 1000 + i,
                "checksum": f"{zlib.adler32(x.encode()):08x}",
                "publish": 1,
                "job_id": str(i),
                "job_retry_count": 0,
                "type": "output",
                "start_time": now,
            }
            for i, x in enumerate(lfns)
        ]
    )
    # Through the real pipeline so the rows carry this worker, as publication requires.
    ids = [sha224(x.replace("/store/user/", "/store/temp/user/").encode()).hexdigest() for x in lfns]
    backend.acquire_transfers([user], len(lfns) + 100000)
    backend.update_transfers([TransferUpdate(id=i, state="SUBMITTED", fts_id="job-1") for i in ids])
    backend.update_transfers([TransferUpdate(id=i, state="DONE") for i in ids])
    backend.upsert_tasks([{"tm_taskname": task, "tm_username": user, "tm_publish_name": dataset, "tm_task_status": task_status}])
    if metadata:
        backend.put_file_metadata(
            [
                {
                    "lfn": x,
                    "taskname": task,
                    "metadata": {"outdataset": dataset, "inevents": 10, "runlumi": {"1": [i + 1]}, "swversion": "CMSSW_13_0_0"},
                }
                for i, x in enumerate(lfns)
            ]
        )
    return lfns


def pub_states(backend: StateBackend, task: str) -> dict[str, str]:
    """destination LFN -> publication state name."""
    return {r["tm_destination_lfn"]: r["tm_publication_state"] for r in backend.list_transfers(task=task)}
