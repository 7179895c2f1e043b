"""Transfer tools: one interface (``base.TransferTool``), one module per tool (Rucio's shape).

Which tool serves a job is read from its endpoint alone (:func:`tool_kind`): the endpoint is
what the state backend (``tm_fts_instance``) and the sandbox entries store, so every component
opens the right tool for a job without looking at the configured links again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from aso.transfertools.base import (
    FileResult,
    JobOptions,
    JobResult,
    Transfer,
    TransferTool,
    TransferToolError,
)

#: the tools a link may name (``[[links]] transfertool``)
TOOL_KINDS = ("fts3", "globus")
#: a Globus endpoint is the Transfer API's URL behind this prefix
GLOBUS_PREFIX = "globus+"


def tool_kind(endpoint: str) -> str:
    """The tool serving ``endpoint``: "globus" for ``globus+<Transfer API URL>``, else
    "fts3" (an FTS3 URL, which is what every endpoint stored before Globus was)."""
    return "globus" if endpoint.startswith(GLOBUS_PREFIX) else "fts3"


def endpoint_for(kind: str, url: str) -> str:
    """The endpoint a link of tool ``kind`` served at ``url`` is stored under (the inverse
    of :func:`tool_kind`)."""
    if kind == "globus":
        return GLOBUS_PREFIX + url.rstrip("/")
    if kind == "fts3":
        return url
    raise ValueError(f"unknown transfer tool {kind!r} (known: {', '.join(TOOL_KINDS)})")


def open_transfer_tool(kind: str, endpoint: str, proxy_path: str, **options) -> TransferTool:
    """The tool named ``kind`` for one endpoint and one user's proxy."""
    if kind == "fts3":
        from aso.transfertools.fts3 import Fts3Tool

        return Fts3Tool(endpoint, proxy_path, **options)
    if kind == "globus":
        from aso.transfertools.globus import GlobusTool

        return GlobusTool(endpoint, **options)
    raise ValueError(f"unknown transfer tool {kind!r} (known: {', '.join(TOOL_KINDS)})")


def tool_factory_from_config(config) -> Callable[[str, str], TransferTool]:
    """The configured tool maker: ``make(endpoint, proxy_path)`` opens the tool the endpoint
    names (:func:`tool_kind`): fts3 with the [fts] section's CA folder, timeout and bulk
    size; globus with the [globus] section's app credentials (one token shared by every
    tool this maker opens) and the sites' collections. The proxy is not used by Globus."""
    fts = config.fts
    globus = None
    lock = threading.Lock()  # the components open tools from several threads

    def make(endpoint: str, proxy_path: str) -> TransferTool:
        nonlocal globus
        if tool_kind(endpoint) == "globus":
            with lock:
                if globus is None:
                    from aso.transfertools.globus import GlobusContext

                    globus = GlobusContext.from_config(config)
            return open_transfer_tool("globus", endpoint, proxy_path, context=globus)
        return open_transfer_tool("fts3", endpoint, proxy_path, ca_dir=fts.ca_dir or None, timeout=fts.timeout,
                                  bulk_size=fts.bulk_size)

    return make


__all__ = ["GLOBUS_PREFIX", "TOOL_KINDS", "FileResult", "JobOptions", "JobResult", "Transfer", "TransferTool",
           "TransferToolError", "endpoint_for", "open_transfer_tool", "tool_factory_from_config", "tool_kind"]
