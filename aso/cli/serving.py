"""Serving a WSGI app from a command: bind first, serve until SIGTERM or Ctrl-C."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from typing import Any

from aso.cli.common import EXIT_BAD_INPUT, fail


def serve_wsgi(wsgi_app: Any, host: str, port: int, *, threads: int, what: str,
               started: Callable[[int], str]) -> None:
    """Serve ``wsgi_app`` on ``host:port`` with cheroot's threaded server. A port in use is
    one error line (exit 2), found by binding before anything is logged; ``started(port)``
    gives the line logged once it listens (the bound port: ``port`` 0 picks one)."""
    from cheroot import wsgi

    httpd = wsgi.Server((host, port), wsgi_app, numthreads=threads, shutdown_timeout=2)
    try:
        httpd.prepare()
    except OSError as exc:
        fail(f"{what} cannot listen on {host}:{port}: {exc}", EXIT_BAD_INPUT)

    def _terminate(*_):
        # Leave the serve loop from the main thread; stop() then ends the pool.
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    logging.getLogger(f"aso.{what.split()[-1]}").info("%s", started(httpd.bind_addr[1]))
    try:
        httpd.serve()
    except KeyboardInterrupt:
        httpd.stop()
