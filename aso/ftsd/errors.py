"""HTTP errors in FTS3's shape, shared by every route of the embedded service."""

from __future__ import annotations

from http import HTTPStatus

#: FTS3 names 419 this way (it is not in Python's table).
_EXTRA_REASONS = {419: "Authentication Timeout"}


def reason_phrase(status: int) -> str:
    if status in _EXTRA_REASONS:
        return _EXTRA_REASONS[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class FtsHttpError(Exception):
    """Rendered as FTS3 renders errors: ``{"status": "<code> <name>", "message": ...}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message

    def body(self) -> dict:
        return {"status": f"{self.status} {reason_phrase(self.status)}", "message": self.message}
