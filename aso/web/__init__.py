"""The status page: an overview of the state backend and one page per task, as HTML.

``aso server`` serves it at its root URL (the API keeps its bearer tokens; the page uses a
login form and a signed session cookie), ``aso web`` serves it alone over a local database.
:func:`install` adds it to a Flask app; :mod:`aso.web.views` holds the routes and the
session handling, :mod:`aso.web.queries` every query.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from flask import Flask, request
from flask.sessions import SecureCookieSessionInterface

from aso.errors import ConfigError
from aso.state.auth import Authenticator
from aso.state.store import Store

#: the cookie holding the signed session (``__Host-`` would forbid it over plain HTTP)
COOKIE_NAME = "aso_session"
MIN_SECRET = 32


class _SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, ``Secure`` exactly when the request came over HTTPS
    (directly, or through a trusted proxy): a page served over plain HTTP on loopback still
    works, and a cookie set over HTTPS is never sent back in clear."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure


def install(app: Flask, store: Store, authenticator: Authenticator | None, *, secret: str = "",
            session_hours: int = 12, open_as_operator: bool = False) -> None:
    """Serve the status page from ``app``.

    ``authenticator`` checks the tokens typed into the login form (the API's tokens).
    ``open_as_operator``: no login at all, every viewer is an operator (``aso web`` on
    loopback without tokens). ``secret`` signs session cookies; '' draws a random one, so
    sessions end when the process does and differ between processes."""
    from aso.web.views import make_blueprint

    if secret and len(secret) < MIN_SECRET:
        raise ConfigError(f"server.web_secret: at least {MIN_SECRET} characters are required (or '' for a random one)")
    if authenticator is None and not open_as_operator:
        raise ConfigError("server.tokens: the status page needs tokens to log in with")
    app.secret_key = secret or secrets.token_urlsafe(48)
    app.session_interface = _SessionInterface()
    app.config.update(
        SESSION_COOKIE_NAME=COOKIE_NAME,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        # the page reloads itself: a refreshed cookie would make a login last for ever
        SESSION_REFRESH_EACH_REQUEST=False,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=session_hours),
    )
    app.register_blueprint(make_blueprint(store, authenticator, open_as_operator=open_as_operator))


def is_page_request() -> bool:
    """Whether the request at hand was routed to the status page (which authenticates with
    its own session, not with a bearer token). Unknown paths are not pages."""
    return request.blueprint == "web"


def trust_proxy(app: Flask) -> None:
    """Take scheme, host and client address from one reverse proxy's X-Forwarded-* headers."""
    from werkzeug.middleware.proxy_fix import ProxyFix

    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)  # type: ignore[method-assign]


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def standalone_app(config, host: str) -> Flask:
    """The app of ``aso web``: the status page alone, over the database of ``[state] url``.

    Without ``[server] tokens`` nobody logs in and every viewer is an operator, so it then
    serves loopback addresses only (``host``: where it is about to listen)."""
    from aso.state.auth import BearerTokenAuthenticator

    url = config.state.url
    if url.startswith(("http://", "https://")):
        raise ConfigError("state.url: aso web reads a database (sqlite:///..., postgresql+psycopg://...); "
                          "with an aso server the status page is already at that server's root URL")
    tokens = config.server.tokens
    if not tokens and config.web.behind_proxy:
        raise ConfigError("web.behind_proxy: without [server] tokens nobody logs in and every viewer is an "
                          "operator; a proxy would open that to whoever reaches it")
    if not tokens and host not in LOOPBACK:
        raise ConfigError(f"web.host: {host!r} is not a loopback address; without [server] tokens nobody logs "
                          "in, so aso web only listens on 127.0.0.1, ::1 or localhost")
    app = Flask("aso.web")
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024  # a login form; nothing else is posted

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    install(app, Store(url, max_retry=config.transfer.max_retry, publication_max_retry=config.publisher.max_retry),
            BearerTokenAuthenticator(tokens) if tokens else None, secret=config.server.web_secret,
            session_hours=config.web.session_hours, open_as_operator=not tokens)
    if config.web.behind_proxy:
        trust_proxy(app)
    return app
