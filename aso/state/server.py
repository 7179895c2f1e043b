"""The CRAB-compatible REST state server.

Resources under ``/crabserver/<instance>/``, as CRAB's REST interface names them:
``filetransfers`` (ASO components and operators), ``fileusertransfers`` (users and the job
post-processing step), ``task`` and ``filemetadata``. Bodies may be form-encoded (lists as
repeated keys, as CRAB clients send) or JSON. Reads answer
``{"desc": {"columns": [...]}, "result": [[...], ...]}``.

Every request but ``/healthz``, ``/metrics`` (open, or behind its own ``[server] metrics_token``:
Prometheus scrapes without the API's tokens) and the status page (:mod:`aso.web`, at ``/``: a login
form and a session cookie instead of bearer tokens) is authenticated; each subresource names the roles allowed
to call it, and user-role calls only ever see or change the caller's own rows.

This module is the Flask app: authentication, dispatch by :data:`aso.state.api.ROUTES`,
the role check, and errors as JSON. Request parameters are read by
:mod:`aso.state.params`, the handlers are :class:`aso.state.api.Api`. gunicorn's entry
point is ``aso.state.server:app_from_env()``.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from aso.errors import (
    AsoError,
    AuthenticationError,
    FencedError,
    ForbiddenError,
    NotFoundError,
    TransitionError,
    ValidationError,
)
from aso.logs import log_requests, set_component
from aso.metrics import names
from aso.metrics.collectors import DEFAULT_CACHE_SECONDS, CachedCollector, state_store_gauges
from aso.metrics.server import instrument, is_metrics_request
from aso.state.api import ROUTES, Api, ServerSettings
from aso.state.auth import Authenticator, BearerTokenAuthenticator, Identity
from aso.state.namespaces import Namespaces
from aso.state.params import Params
from aso.state.store import Store

log = logging.getLogger("aso.server")


def _error_response(status: int, message: str, **extra: Any) -> Response:
    body = {"error": message, **{k: v for k, v in extra.items() if v is not None}}
    return Response(json.dumps(body), status=status, mimetype="application/json")


def create_app(
    store: Store,
    authenticator: Authenticator,
    settings: ServerSettings | None = None,
    instance: str | None = None,
    web: dict[str, Any] | None = None,
    *,
    metrics_token: str = "",
    metrics_cache_seconds: float = DEFAULT_CACHE_SECONDS,
) -> Flask:
    """The WSGI app serving ``store``; ``instance`` pins the <instance> path part if given.
    ``web``: options of the status page (:func:`aso.web.install`). ``/metrics`` needs
    ``metrics_token`` as a bearer token when it is set."""
    from aso.web import install, is_page_request

    settings = settings or ServerSettings()
    api = Api(store, settings)
    app = Flask("aso.state.server")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    log_requests(app, logging.getLogger("aso.server.requests"), lambda: getattr(g.get("identity"), "name", None))
    install(app, store, authenticator, **(web or {}))

    @app.before_request
    def authenticate():
        # Before routing: a caller without a valid token learns nothing, not even which
        # paths or instances exist.
        if request.path == "/healthz" or is_metrics_request() or is_page_request():
            return  # the status page logs in with a form and its own session; /metrics has its own token
        who = authenticator.authenticate(request.headers)
        if who is None:
            raise AuthenticationError("a valid bearer token is required (Authorization: Bearer <token>)")
        g.identity = who

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.get("/crabserver/<inst>/openapi.json")
    def openapi_document(inst: str):
        from aso.state.openapi import build_document

        if instance is not None and inst != instance:
            raise NotFoundError(f"no REST instance {inst!r} here")
        return build_document(instance)

    @app.route("/crabserver/<inst>/<resource>", methods=["GET", "POST", "PUT"])
    def dispatch(inst: str, resource: str):
        who: Identity = g.identity
        if instance is not None and inst != instance:
            raise NotFoundError(f"no REST instance {inst!r} here")
        params = Params(request)
        sub = params.get("subresource", "") or ""
        if not isinstance(sub, str):  # a JSON body can make it a list or an object
            raise ValidationError("subresource", f"expected a name, got {type(sub).__name__}")
        route = ROUTES.get((resource, request.method, sub))
        if route is None:
            known = sorted(s for (r, m, s) in ROUTES if r == resource and m == request.method)
            if not known:
                raise NotFoundError(f"no resource {resource!r} for {request.method}")
            raise ValidationError("subresource", f"{sub!r} is not one of {', '.join(known) or '(none)'}")
        handler_name, roles = route
        g.metrics_route = f"{request.method} {resource}/{sub}" if sub else f"{request.method} {resource}"
        if who.role not in roles:
            raise ForbiddenError(f"{who.name} ({who.role}) may not call {resource} {sub or request.method}; allowed: {', '.join(sorted(roles))}")
        handler: Callable[[Params, Identity], Any] = getattr(api, handler_name)
        return handler(params, who)

    @app.errorhandler(AsoError)
    def on_aso_error(exc: AsoError):
        if isinstance(exc, ValidationError):
            return _error_response(400, str(exc), field=exc.field, problem=exc.problem)
        if isinstance(exc, FencedError):
            return _error_response(409, str(exc), fenced=True, worker=exc.worker, generation=exc.generation,
                                   current=exc.current)
        if isinstance(exc, TransitionError):
            return _error_response(409, str(exc), row=exc.row_id, current=exc.current, requested=exc.requested, kind=exc.kind)
        if exc.http_status >= 500:
            log.error("%s %s failed: %s", request.method, request.path, exc)
        return _error_response(exc.http_status, str(exc))

    @app.errorhandler(RequestEntityTooLarge)
    def on_too_large(exc):
        return _error_response(413, f"request body larger than {settings.max_body_bytes} bytes", field="body")

    @app.errorhandler(HTTPException)
    def on_http(exc: HTTPException):
        return _error_response(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def on_unexpected(exc: Exception):
        # The traceback goes to the server log; the client gets no Python text.
        log.exception("%s %s failed", request.method, request.path)
        return _error_response(500, "internal error; see the server log")

    instrument(
        app,
        requests_metric=names.SERVER_REQUESTS,
        latency_metric=names.SERVER_LATENCY,
        collectors=[CachedCollector(state_store_gauges(store), metrics_cache_seconds)],
        token=metrics_token,
    )
    return app


def app_from_config(config) -> Flask:
    """The app an ``aso server`` (or gunicorn) serves for a loaded configuration."""
    from aso.errors import ConfigError

    db_url = config.server.db_url or config.state.url
    if db_url.startswith(("http://", "https://")):
        raise ConfigError("server.db_url: the server needs a database URL (state.url points at a REST server)")
    if not config.server.tokens:
        raise ConfigError("server.tokens: no tokens configured; every request would be refused")
    app = create_app(
        Store(db_url, max_retry=config.transfer.max_retry, publication_max_retry=config.publisher.max_retry),
        BearerTokenAuthenticator(config.server.tokens),
        ServerSettings(
            max_body_bytes=config.server.max_body_bytes,
            max_batch=config.server.max_batch,
            namespaces=Namespaces.from_config(config.server),
        ),
        instance=config.aso.instance,
        metrics_token=config.server.metrics_token,
        metrics_cache_seconds=config.metrics.cache_seconds,
        web={"secret": config.server.web_secret, "session_hours": config.web.session_hours},
    )
    if config.web.behind_proxy:
        from aso.web import trust_proxy

        trust_proxy(app)
    return app


def app_from_env() -> Flask:
    """Entry point for gunicorn: ``gunicorn -w 4 'aso.state.server:app_from_env()'``."""
    from aso.config import load_config
    from aso.logs import configure

    config = load_config(os.environ.get("ASO_CONFIG"))
    # gunicorn configures only its own loggers: aso's lines (the request lines too) go to
    # stderr as `aso server` writes them, in [aso] log_format
    configure(config.aso.log_level, config.aso.log_format)
    set_component("server")
    return app_from_config(config)
