"""The one rule that decides RETRY or FAILED, for submissions, transfers and publication.

CRAB's rule: a row that has already been retried ``count`` times fails when
``count + 1 > max_retry`` (so ``max_retry = 0`` fails at the first failure), or at once when
its reason matches a permanent-error pattern (nothing retrying can cure), or when the
caller says the failure is final. ``max_retry`` is the row's own (set at injection from
the request or the storing host's configuration); the policy's default only covers rows
that carry none. Reasons are cut to the configured length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    RETRY = "RETRY"
    FAILED = "FAILED"


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str

    @property
    def state(self) -> str:
        return self.outcome.value

    @property
    def gives_up(self) -> bool:
        return self.outcome is Outcome.FAILED


@dataclass(frozen=True)
class RetryPolicy:
    max_retry: int = 3
    permanent_errors: tuple[str, ...] = ()
    reason_length: int = 1000
    _compiled: tuple[re.Pattern, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", tuple(re.compile(p, re.IGNORECASE) for p in self.permanent_errors))

    @classmethod
    def for_transfers(cls, config: Any) -> RetryPolicy:
        """Submission and transfer failures: [transfer] max_retry, [reporter] patterns."""
        return cls(config.transfer.max_retry, tuple(config.reporter.permanent_errors), config.reporter.reason_length)

    @classmethod
    def for_publication(cls, config: Any) -> RetryPolicy:
        """Publication failures: [publisher] max_retry; no pattern is permanent there."""
        return cls(config.publisher.max_retry, (), config.reporter.reason_length)

    def is_permanent(self, reason: str | None) -> bool:
        text = reason or ""
        return any(p.search(text) for p in self._compiled)

    def cut(self, reason: str | None) -> str | None:
        if reason is None or len(reason) <= self.reason_length:
            return reason
        return reason[: self.reason_length - 1] + "…"

    def decide(self, retries_done: Any, max_retry: Any, reason: str | None, *, final: bool = False) -> Decision:
        """RETRY or FAILED for a row retried ``retries_done`` times whose own limit is
        ``max_retry`` (None or "" when the row has none: the policy's default applies;
        0 is a limit like any other)."""
        done = int(retries_done or 0)
        limit = self.max_retry if max_retry in (None, "") else int(max_retry)
        text = reason or "failed without a reason"
        # Patterns are matched on the whole reason: a cut could remove the telling words.
        give_up = final or self.is_permanent(text) or done + 1 > limit
        return Decision(Outcome.FAILED if give_up else Outcome.RETRY, self.cut(text) or "")
