"""The state backend: store (schema and queries), REST server, and the client backends.

A reader starts here: :class:`StateBackend` is the interface every component uses,
:func:`open_backend` / :func:`backend_from_config` give one, and the records
(:class:`TransferUpdate`, ...) are what its calls take and answer.
"""

from aso.state.backend import StateBackend
from aso.state.factory import backend_from_config, open_backend
from aso.state.records import (
    InjectResult,
    KillResult,
    PublicationUpdate,
    TransferUpdate,
    UpdateResult,
)

__all__ = [
    "StateBackend",
    "open_backend",
    "backend_from_config",
    "TRANSFER_COLUMNS",
    "TransferUpdate",
    "PublicationUpdate",
    "UpdateResult",
    "InjectResult",
    "KillResult",
]


def __getattr__(name: str) -> list[str]:
    # TRANSFER_COLUMNS comes from the schema, which loads SQLAlchemy: only when asked for
    if name == "TRANSFER_COLUMNS":
        from aso.state import records

        return records.TRANSFER_COLUMNS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
