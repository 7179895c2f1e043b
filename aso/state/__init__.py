"""The state backend: store (schema and queries), REST server, and the client backends."""

from aso.state.backend import PublicationUpdate, StateBackend, TransferUpdate, open_backend

__all__ = ["StateBackend", "TransferUpdate", "PublicationUpdate", "open_backend"]
