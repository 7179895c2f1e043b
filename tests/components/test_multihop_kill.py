"""A multihop job is canceled whole (FTS3 answers 400 to a partial cancel of one), by the
retry manager and by a transfer pass that meets a kill mid-submission alike."""

from __future__ import annotations

from aso.components.retry_manager import RetryManagerPass, RetryManagerSummary
from aso.transfertools import FileResult, JobResult, TransferTool


class _Cancels(TransferTool):
    """A stand-in FTS that records the cancels it is asked for (the interface, not a patch)."""

    name = "cancels"

    def __init__(self):
        self.cancels: list[tuple[str, list[int] | None]] = []

    def delegate(self, lifetime, renew_below):
        return None

    def expected_job_id(self, sid):
        return sid

    def submit(self, transfers, options, sid, *, multihop=False):
        return sid

    def bulk_query(self, job_ids):
        return {}

    def cancel(self, job_id, file_ids=None):
        self.cancels.append((job_id, None if file_ids is None else list(file_ids)))


def test_the_retry_manager_cancels_a_multihop_job_whole():
    tool = _Cancels()
    status = JobResult("j1", "ACTIVE", None, (FileResult("r1", "ACTIVE", None, file_id=102),), multihop=True)
    summary = RetryManagerSummary()
    assert RetryManagerPass._cancel(tool, status, {"r1"}, summary)
    assert tool.cancels == [("j1", None)] and summary.canceled_jobs == 1


def test_a_regular_job_keeps_its_other_files():
    tool = _Cancels()
    status = JobResult("j1", "ACTIVE", None, (FileResult("r1", "ACTIVE", None, file_id=1),
                                              FileResult("r2", "SUBMITTED", None, file_id=2)))
    assert RetryManagerPass._cancel(tool, status, {"r1"}, RetryManagerSummary())
    assert tool.cancels == [("j1", [1])]
