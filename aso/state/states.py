"""Transfer and publication states, with CRAB's numeric codes, and the allowed transitions.

The codes are CRAB's (``ServerUtilities.py``) so that CRAB tools can read our tables. The
transition tables are the single source of truth: the store enforces them, nothing else.
"""

from __future__ import annotations

from enum import IntEnum


class TransferState(IntEnum):
    NEW = 0
    ACQUIRED = 1
    FAILED = 2
    DONE = 3
    RETRY = 4
    SUBMITTED = 5
    KILL = 6
    KILLED = 7

    @classmethod
    def parse(cls, value: str | int | TransferState, field: str = "transfer_state") -> TransferState:
        return _parse(cls, value, field)


class PublicationState(IntEnum):
    NEW = 0
    ACQUIRED = 1
    FAILED = 2
    DONE = 3
    RETRY = 4
    NOT_REQUIRED = 5

    @classmethod
    def parse(
        cls, value: str | int | PublicationState, field: str = "publication_state"
    ) -> PublicationState:
        return _parse(cls, value, field)


def _parse(enum: type[IntEnum], value, field: str):
    if type(value) is str:
        # the usual spelling, the name itself: one look-up (a 100k-row update parses 200k)
        member = enum.__members__.get(value)
        if member is not None:
            return member
    from aso.errors import ValidationError

    if isinstance(value, enum):
        return value
    if isinstance(value, bool):
        raise ValidationError(field, f"expected a state name, got {value!r}")
    if isinstance(value, int):
        try:
            return enum(value)
        except ValueError:
            pass
    elif isinstance(value, str):
        name = value.strip().upper()
        if name in enum.__members__:
            return enum[name]
        if name.isascii() and name.isdigit():  # '²' is a digit to str.isdigit, not to int()
            return _parse(enum, int(name), field)
    names = ", ".join(enum.__members__)
    raise ValidationError(field, f"unknown state {value!r}; expected one of {names}")


T = TransferState
#: Allowed transfer transitions. Re-injection of a finished row (a job retry) is not a
#: transition: the store re-initialises the row, see ``REINJECTABLE``.
TRANSFER_TRANSITIONS: dict[TransferState, frozenset[TransferState]] = {
    T.NEW: frozenset({T.ACQUIRED, T.KILL, T.FAILED}),
    # ACQUIRED -> NEW: the retry manager hands back rows whose submitter died before submitting.
    T.ACQUIRED: frozenset({T.SUBMITTED, T.RETRY, T.FAILED, T.NEW, T.KILL}),
    T.SUBMITTED: frozenset({T.DONE, T.RETRY, T.FAILED, T.KILL}),
    T.RETRY: frozenset({T.NEW, T.FAILED, T.KILL}),
    T.KILL: frozenset({T.KILLED}),
    # FAILED -> NEW: an operator's ``aso retry``.
    T.FAILED: frozenset({T.NEW}),
    T.DONE: frozenset(),
    T.KILLED: frozenset({T.NEW}),
}

#: States in which a row is still being worked on; re-injection must not clobber them.
TRANSFER_IN_FLIGHT = frozenset({T.NEW, T.ACQUIRED, T.SUBMITTED, T.RETRY, T.KILL})
#: States a job retry may re-initialise to NEW.
REINJECTABLE = frozenset({T.DONE, T.FAILED, T.KILLED})

P = PublicationState
PUBLICATION_TRANSITIONS: dict[PublicationState, frozenset[PublicationState]] = {
    P.NEW: frozenset({P.ACQUIRED, P.NOT_REQUIRED, P.FAILED}),
    P.ACQUIRED: frozenset({P.DONE, P.FAILED, P.RETRY, P.NEW}),
    P.RETRY: frozenset({P.NEW, P.ACQUIRED, P.FAILED}),
    # FAILED -> NEW: ``retryPublication`` (which CRAB never got working).
    P.FAILED: frozenset({P.NEW}),
    P.DONE: frozenset(),
    # NOT_REQUIRED -> NEW: the post-job sets the publish flag once the transfer is done.
    P.NOT_REQUIRED: frozenset({P.NEW}),
}
