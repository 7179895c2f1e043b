"""The data that crosses the backend boundary: a transfer row's columns, the changes a
caller asks for, and what each batch call answers.

Both backends (in process and over REST), the store and the server speak these types, so
they live apart from all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aso.state.schema import transfers
from aso.state.states import PublicationState, TransferState

#: Columns of a transfer row, in the schema's order (CRAB's, plus ours); REST reads answer
#: with these.
TRANSFER_COLUMNS = [c.name for c in transfers.columns]


class Acquired(int):
    """What ``acquire_transfers`` answers: the number of rows acquired (an int, as callers
    always used it), and ``held``: how many of the users' NEW rows wait because a site or
    link they need is full (0 without limits)."""

    held: int

    def __new__(cls, acquired: int, held: int = 0) -> Acquired:
        value = super().__new__(cls, acquired)
        value.held = held
        return value

    def __getnewargs__(self) -> tuple[int, int]:  # copy and pickle keep ``held``
        return (int(self), self.held)


@dataclass
class TransferUpdate:
    """One row's change in ``update_transfers``.

    ``expect_state`` / ``expect_fts_id`` are guards: a row that does not match them is
    *skipped* (reported in the result, not an error). This is how a late FTS result for a
    row that was killed, resolved or resubmitted meanwhile is ignored. A row that matches the
    guards but whose transition is not allowed makes the whole call fail (TransitionError).
    """

    id: str
    state: TransferState | str
    reason: str | None = None
    retry_increment: int = 0
    fts_id: str | None = None
    fts_instance: str | None = None
    expect_state: TransferState | str | None = None
    expect_fts_id: str | None = None
    #: the sites of the path submitted ("A>B>C"), recorded with SUBMITTED
    path: str | None = None


@dataclass
class PublicationUpdate:
    id: str
    state: PublicationState | str
    reason: str | None = None
    retry_increment: int = 0
    block_name: str | None = None
    publish_flag: int | None = None


@dataclass
class UpdateResult:
    updated: list[str] = field(default_factory=list)
    #: rows left alone because a guard did not match: {"id", "state", "reason"}
    skipped: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class InjectResult:
    inserted: list[str] = field(default_factory=list)
    #: finished rows re-initialised to NEW by a job retry
    reinitialised: list[str] = field(default_factory=list)
    #: rows left alone: {"id", "state", "reason"} (still in flight, or same job retry)
    skipped: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class KillResult:
    killed: list[str] = field(default_factory=list)
    #: {"id", "state", "reason"}: already terminal, unknown, or not the caller's
    failed_kill: list[dict[str, Any]] = field(default_factory=list)
