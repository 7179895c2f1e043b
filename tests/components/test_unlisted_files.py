"""Files a terminal job's result does not list (a tool such as Globus lists only the files
it copied and those it skipped): one rule for what they ended as, used by the monitor, and
the retry manager's reading of it."""

from __future__ import annotations

from aso.components.monitor import unlisted_outcome
from aso.components.retry_manager import _unlisted_state
from aso.transfertools import JobResult


def test_a_job_that_says_its_unlisted_files_finished():
    assert unlisted_outcome(JobResult("t1", "FINISHED", None, unlisted="FINISHED")) == ("FINISHED", None)


def test_unlisted_files_of_a_failed_job_carry_its_reason():
    state, reason = unlisted_outcome(JobResult("t1", "FAILED", "Globus task FAILED: EXPIRED: deadline"))
    assert state == "FAILED"
    assert reason == "FTS job t1 ended FAILED with this file unfinished: Globus task FAILED: EXPIRED: deadline"
    assert unlisted_outcome(JobResult("t2", "CANCELED", None)) == (
        "FAILED", "FTS job t2 ended CANCELED with this file unfinished")


def test_the_retry_manager_trusts_unlisted_only_once_the_job_ended():
    assert _unlisted_state(JobResult("t", "FINISHED", None, unlisted="FINISHED")) == "FINISHED"
    assert _unlisted_state(JobResult("t", "ACTIVE", None, unlisted="FINISHED")) is None
    assert _unlisted_state(JobResult("t", "LOST", "gone", unlisted="FINISHED")) is None
    assert _unlisted_state(None) is None
