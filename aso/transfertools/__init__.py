"""Transfer tools: one interface (``base.TransferTool``), one module per tool (Rucio's shape)."""

from __future__ import annotations

from aso.transfertools.base import (
    FileResult,
    JobOptions,
    JobResult,
    Transfer,
    TransferTool,
    TransferToolError,
)


def open_transfer_tool(kind: str, endpoint: str, proxy_path: str, **options) -> TransferTool:
    """The tool named ``kind`` for one endpoint and one user's proxy."""
    if kind == "fts3":
        from aso.transfertools.fts3 import Fts3Tool

        return Fts3Tool(endpoint, proxy_path, **options)
    raise ValueError(f"unknown transfer tool {kind!r} (known: fts3)")


__all__ = ["FileResult", "JobOptions", "JobResult", "Transfer", "TransferTool", "TransferToolError", "open_transfer_tool"]
