"""Serving a WSGI app from a command: bind first, serve until SIGTERM or Ctrl-C."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from aso.cli.common import EXIT_BAD_INPUT, fail

#: how often the main thread looks whether a stop was asked for
STOP_POLL_SECONDS = 0.1


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
    logging.getLogger(f"aso.{what.split()[-1]}").info("%s", started(httpd.bind_addr[1]))
    serve_until_stopped(httpd)


def serve_until_stopped(httpd: Any) -> None:
    """Serve a prepared cheroot server on a thread of its own until SIGTERM or SIGINT, then
    stop it from the main thread, outside any signal handler.

    The handlers only note the signal. A handler that raised instead (KeyboardInterrupt, as
    these servers once did) lands wherever the main thread is, possibly inside the request
    queue's notify: a worker thread then never wakes for its shutdown request, and ``stop()``
    joins it forever (about one stop in ten of ``aso server`` hung so)."""
    asked: list[int] = []  # list.append takes no lock a handler could find held
    failed: list[BaseException] = []

    def serve() -> None:
        try:
            httpd.serve()
        except BaseException as exc:  # handed to the main thread, which stops and raises it
            failed.append(exc)

    previous = {sig: signal.signal(sig, lambda signum, _frame: asked.append(signum))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    # the serve loop looks for a stop between two waits for connections: short waits make
    # a stop take a tenth of a second instead of half a second (the default)
    httpd.expiration_interval = min(httpd.expiration_interval, STOP_POLL_SECONDS)
    server = threading.Thread(target=serve, name="http-serve", daemon=True)
    try:
        server.start()
        while not asked and server.is_alive():
            time.sleep(STOP_POLL_SECONDS)
    finally:
        httpd.stop()
        server.join(timeout=5)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failed:
        raise failed[0]
