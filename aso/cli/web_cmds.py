"""``aso web``: the status page on its own, for installations on the local backend."""

from __future__ import annotations

import click

from aso.cli.common import EXIT_BAD_INPUT, fail, pass_app


@click.command()
@click.option("--host", default=None, help="Address to listen on (default: web.host).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Port to listen on (default: web.port).")
@pass_app
def web(app, host, port) -> None:
    """Serve the status page over the database of [state] url.

    Without [server] tokens there is no login and every viewer is an operator, so it then
    listens on loopback only; with tokens, viewers log in with them as on aso server (whose
    root URL serves the same page).
    """
    import logging
    import signal

    from cheroot import wsgi

    from aso.web import standalone_app

    config = app.config
    host = host or config.web.host
    port = port if port is not None else config.web.port
    wsgi_app = standalone_app(config, host)
    httpd = wsgi.Server((host, port), wsgi_app, numthreads=4, shutdown_timeout=2)
    try:
        httpd.prepare()  # bind now: a port in use is a one-line error, not a traceback
    except OSError as exc:
        fail(f"aso web cannot listen on {host}:{port}: {exc}", EXIT_BAD_INPUT)

    def _terminate(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    shown = f"[{host}]" if ":" in host else host
    logging.getLogger("aso.web").info("aso web on http://%s:%d/ (%s)", shown, httpd.bind_addr[1],
                                      "login with [server] tokens" if config.server.tokens else "no login: loopback only")
    try:
        httpd.serve()
    except KeyboardInterrupt:
        httpd.stop()
