"""The retry rule on its own: every branch, fast."""

from __future__ import annotations

import pytest

from aso.components.retry_policy import Outcome, RetryPolicy
from aso.config import from_dict

POLICY = RetryPolicy(max_retry=2, permanent_errors=("permission denied", r"mkdir\(\) fail"), reason_length=20)


@pytest.mark.parametrize("done,limit,outcome", [
    (0, 2, Outcome.RETRY), (1, 2, Outcome.RETRY), (2, 2, Outcome.FAILED), (5, 2, Outcome.FAILED),
    (0, 0, Outcome.FAILED),  # max_retry 0: the first failure is final (0 is not "missing")
    (0, None, Outcome.RETRY), (2, None, Outcome.FAILED),  # no limit on the row: the policy's default (2)
    (0, "", Outcome.RETRY), ("1", "3", Outcome.RETRY), (None, 1, Outcome.RETRY),
])
def test_count_plus_one_over_the_limit_fails(done, limit, outcome):
    assert POLICY.decide(done, limit, "network glitch").outcome is outcome


@pytest.mark.parametrize("reason", ["Permission denied by storage", "DESTINATION mkdir() failed"])
def test_a_permanent_reason_fails_at_once(reason):
    decision = POLICY.decide(0, 10, reason)
    assert decision.gives_up and decision.state == "FAILED"


def test_final_fails_whatever_the_count():
    assert POLICY.decide(0, 10, "no metadata", final=True).outcome is Outcome.FAILED


def test_reasons_are_cut_and_never_empty():
    assert POLICY.decide(0, 10, "x" * 50).reason == "x" * 19 + "…"
    assert POLICY.decide(0, 10, None).reason.startswith("failed without")
    assert POLICY.cut(None) is None and POLICY.cut("short") == "short"


def test_policies_from_the_configuration():
    config = from_dict({"transfer": {"max_retry": 4}, "publisher": {"max_retry": 1},
                        "reporter": {"permanent_errors": ["quota"], "reason_length": 100}})
    transfers, publication = RetryPolicy.for_transfers(config), RetryPolicy.for_publication(config)
    assert (transfers.max_retry, transfers.permanent_errors, transfers.reason_length) == (4, ("quota",), 100)
    assert transfers.decide(0, None, "disk quota exceeded").gives_up
    assert (publication.max_retry, publication.permanent_errors) == (1, ())
    assert not publication.decide(0, None, "disk quota exceeded").gives_up
