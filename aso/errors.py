"""Exceptions shared by every part of aso.

Each carries enough to produce a clear message for an operator and an HTTP status for the
REST layer, so the server and the CLI can render any of them without special cases.
"""

from __future__ import annotations


class AsoError(Exception):
    """Base class. ``http_status`` is what the REST server answers for it."""

    http_status = 500


class ConfigError(AsoError):
    """A configuration file or option is wrong; the message names the option."""

    http_status = 500


class ValidationError(AsoError):
    """Bad input. ``field`` names what was wrong; nothing was written."""

    http_status = 400

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class TransitionError(AsoError):
    """A state change the state machine does not allow; nothing in the batch was written."""

    http_status = 409

    def __init__(self, row_id: str, current: str, requested: str, kind: str = "transfer"):
        self.row_id = row_id
        self.current = current
        self.requested = requested
        self.kind = kind
        super().__init__(
            f"{kind} {row_id}: cannot go from {current} to {requested}; nothing was changed"
        )


class NotFoundError(AsoError):
    http_status = 404


class AuthenticationError(AsoError):
    http_status = 401


class ForbiddenError(AsoError):
    http_status = 403


class BackendUnavailable(AsoError):
    """The state backend (database or REST server) could not be reached after retries."""

    http_status = 503


class FencedError(AsoError):
    """A pipeline write sent with a generation that is no longer the worker's: another
    worker took this worker's work over meanwhile (see docs/hosts.md). Nothing was written;
    the pass must stop and the next one heartbeat again."""

    http_status = 409

    def __init__(self, worker: str, generation: int, current: int):
        self.worker = worker
        self.generation = generation
        self.current = current
        super().__init__(f"generation {generation} of worker {worker} is fenced (current generation {current}): "
                         f"another worker took this worker's work over; nothing was written")
