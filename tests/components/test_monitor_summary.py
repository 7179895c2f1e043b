"""The monitor's pass summary adds up what every pool thread found, with no count lost.

FTS is stood in for by a transfer tool that answers every job FINISHED (the interface, not
a patched component): the point is many groups finishing at once on many threads."""

from __future__ import annotations

import sys

from aso.components.monitor import MonitorPass
from aso.components.pipeline import PipelineSettings
from aso.sandbox import Sandbox
from aso.transfertools import FileResult, JobResult, TransferTool

USERS, JOBS, FILES = 60, 2, 40


class _AllFinished(TransferTool):
    name = "all-finished"

    def __init__(self, endpoint: str, proxy: str):
        self.endpoint = endpoint

    def delegate(self, lifetime, renew_below):
        return None

    def expected_job_id(self, sid):
        return sid

    def submit(self, transfers, options, sid):
        return sid

    def bulk_query(self, job_ids):
        return {j: JobResult(j, "FINISHED", None, tuple(FileResult(f"{j}-{i}", "FINISHED", None) for i in range(FILES)))
                for j in job_ids}

    def cancel(self, job_id, file_ids=None):
        pass


class _Proxies:
    def get_proxy(self, user):
        return f"/proxies/{user}.pem"


def test_counts_from_many_threads_are_not_lost(tmp_path):
    box = Sandbox(tmp_path, "monitor")
    for u in range(USERS):
        for j in range(JOBS):
            job = f"job-{u}-{j}"
            box.write(f"user{u}", job, {"job_id": job, "user": f"user{u}", "endpoint": f"https://fts{u % 3}",
                                        "submitted": 0, "files": {f"{job}-{i}": {} for i in range(FILES)},
                                        "reported": [], "batches": 0, "last_progress": 0})
    settings = PipelineSettings(sandbox_root=tmp_path, monitor_threads=8, job_timeout=10**9, file_timeout=10**9)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: a lost update shows
    try:
        summary = MonitorPass(_Proxies(), _AllFinished, settings).run()
    finally:
        sys.setswitchinterval(old)
    assert summary.jobs == summary.finished_jobs == USERS * JOBS
    assert summary.handed_over == {"FINISHED": USERS * JOBS * FILES}
    # one reporter entry per poll (a user's jobs at their endpoint), each file naming its job
    reporter = Sandbox(tmp_path, "reporter")
    assert box.count() == 0 and reporter.count() == USERS
    results = [(job, f.id, f.state) for e in reporter.entries() for job, f in reporter.load_record(e).results()]
    assert sorted(results) == sorted((f"job-{u}-{j}", f"job-{u}-{j}-{i}", "FINISHED")
                                     for u in range(USERS) for j in range(JOBS) for i in range(FILES))
