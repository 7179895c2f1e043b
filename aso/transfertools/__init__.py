"""Transfer tools: one interface (``base.TransferTool``), one module per tool (Rucio's shape)."""

from __future__ import annotations

from collections.abc import Callable

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


def tool_factory_from_config(config) -> Callable[[str, str], TransferTool]:
    """The configured tool maker: ``make(endpoint, proxy_path)`` opens the fts3 tool with the
    [fts] section's CA folder, timeout and bulk size."""
    fts = config.fts

    def make(endpoint: str, proxy_path: str) -> TransferTool:
        return open_transfer_tool("fts3", endpoint, proxy_path, ca_dir=fts.ca_dir or None, timeout=fts.timeout,
                                  bulk_size=fts.bulk_size)

    return make


__all__ = ["FileResult", "JobOptions", "JobResult", "Transfer", "TransferTool", "TransferToolError", "open_transfer_tool",
           "tool_factory_from_config"]
