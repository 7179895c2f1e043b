"""``aso web``: the status page on its own, for installations on the local backend."""

from __future__ import annotations

import click

from aso.cli.common import pass_app


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
    from aso.cli.serving import serve_wsgi
    from aso.web import standalone_app

    config = app.config
    host = host or config.web.host
    shown = f"[{host}]" if ":" in host else host
    login = "login with [server] tokens" if config.server.tokens else "no login: loopback only"
    serve_wsgi(standalone_app(config, host), host, port if port is not None else config.web.port, threads=4,
               what="aso web", started=lambda bound: f"aso web on http://{shown}:{bound}/ ({login})")
