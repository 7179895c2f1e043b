"""Routes of the status page: login and logout, the overview, a task's files.

Authentication: a form posts one of the API's tokens; the authenticator that guards the API
checks it (in constant time, against every token). The session cookie then carries only the
identity and its role, signed with the app's secret (Flask's itsdangerous session), HTTP-only
and SameSite=Strict. The forms carry a CSRF token kept in the session, and a POST whose
Origin is another site is refused. Nothing secret ever goes into a URL.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.exceptions import HTTPException

from aso import validate
from aso.errors import AsoError, BackendUnavailable, ValidationError
from aso.state.auth import Authenticator, Identity
from aso.state.states import TransferState
from aso.state.store import Store
from aso.web import LOOPBACK, queries

log = logging.getLogger("aso.web")

_HERE = Path(__file__).parent
CSS = (_HERE / "static" / "aso.css").read_bytes()
#: no script at all, styles only from our own stylesheet, never framed
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # same-origin, not no-referrer: under no-referrer browsers post forms with "Origin: null",
    # which the origin check must refuse; other sites (FTS links) still learn nothing
    "Referrer-Policy": "same-origin",
}
#: longer than any token a configuration holds; a longer one is not even compared
MAX_TOKEN = 4096
_OPEN = {"web.login", "web.login_form", "web.stylesheet"}
LOCAL_VIEWER = Identity("local", "operator")


def make_blueprint(store: Store, authenticator: Authenticator | None, *, open_as_operator: bool = False) -> Blueprint:
    bp = Blueprint("web", __name__, template_folder="templates")

    @bp.before_request
    def who_is_viewing():
        if open_as_operator:
            # Nobody logs in, so only a loopback name may be asked for: a page another site
            # points its own name at (DNS rebinding) must not read it through the browser.
            if request.host.rsplit(":", 1)[0].strip("[]") not in LOOPBACK:
                return _page("error.html", 403, title="Forbidden", message="Open this page at 127.0.0.1 or localhost.")
            g.viewer = LOCAL_VIEWER
            return None
        if request.method == "POST" and not _same_origin():
            return _page("error.html", 403, title="Forbidden", message="This form was posted from another site.")
        name, role, at = session.get("who"), session.get("role"), session.get("at")
        if isinstance(at, int) and time.time() - at > current_app.permanent_session_lifetime.total_seconds():
            session.clear()  # a login lasts session_hours from the login, however often pages reload
        elif isinstance(name, str) and isinstance(role, str):
            g.viewer = Identity(name, role)
            return None
        g.viewer = None
        if request.endpoint in _OPEN:
            return None
        # Every page but the login form needs a session; a task URL says nothing before login.
        return redirect(url_for("web.login_form"), code=303)

    @bp.after_request
    def security_headers(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        if request.endpoint != "web.stylesheet":
            # Pages show users' files: never kept by a shared cache or the back button.
            response.headers["Cache-Control"] = "no-store"
        return response

    @bp.get("/static/aso.css")
    def stylesheet():
        return Response(CSS, mimetype="text/css", headers={"Cache-Control": "max-age=3600"})

    @bp.get("/login")
    def login_form():
        if g.viewer is not None:
            return redirect(url_for("web.overview"), code=303)
        return _page("login.html", 200, csrf=_csrf_token())

    @bp.post("/login")
    def login():
        if g.viewer is not None:
            return redirect(url_for("web.overview"), code=303)
        if not _csrf_ok():
            return _page("login.html", 400, csrf=_csrf_token(),
                         error="The login form expired (csrf). Please try again.")
        token = request.form.get("token", "")
        who = None
        if 0 < len(token) <= MAX_TOKEN and authenticator is not None:
            who = authenticator.authenticate({"Authorization": f"Bearer {token.strip()}"})
        if who is None:
            # One message for every failure: no hint of which tokens or identities exist.
            log.info("status page: failed login from %s", request.remote_addr)
            return _page("login.html", 401, csrf=_csrf_token(), error="That token is not valid.")
        # A fresh session (and CSRF token) at login: one planted before cannot be taken over.
        session.clear()
        session.permanent = True
        session.update(who=who.name, role=who.role, at=int(time.time()), csrf=secrets.token_urlsafe(32))
        log.info("status page: %s (%s) logged in from %s", who.name, who.role, request.remote_addr)
        return redirect(url_for("web.overview"), code=303)

    @bp.post("/logout")
    def logout():
        if not _csrf_ok():
            return _page("error.html", 400, title="Bad request", message="csrf: the form expired; reload the page.")
        session.clear()
        return redirect(url_for("web.login_form"), code=303)

    @bp.get("/")
    def overview():
        viewer: Identity = g.viewer
        started = time.perf_counter()
        data = queries.overview(store, viewer.owner_filter, with_health=viewer.role != "user")
        return _page("overview.html", 200, o=data, refresh=True, hour=_bars(data.hour), day=_bars(data.day),
                     elapsed_ms=(time.perf_counter() - started) * 1000)

    @bp.get("/task/<taskname>")
    def task(taskname: str):
        viewer: Identity = g.viewer
        try:
            validate.taskname(taskname)
        except ValidationError:
            abort(404)
        state = _state_param()
        page = _page_param()
        data = queries.task_page(store, viewer.owner_filter, taskname, state=state, page=page)
        if data is None:
            # Another user's task is "not found", like a task that does not exist.
            abort(404)
        return _page("task.html", 200, t=data, refresh=True, state=state.name if state else "",
                     states=[s.name for s in TransferState])

    @bp.errorhandler(HTTPException)
    def on_http(exc: HTTPException):
        code = exc.code or 500
        if code == 404:
            return _page("error.html", 404, title="Not found", message="There is no such page or task here.")
        return _page("error.html", code, title=exc.name, message=exc.description or exc.name)

    @bp.errorhandler(ValidationError)
    def on_bad_input(exc: ValidationError):
        return _page("error.html", 400, title="Bad request", message=str(exc), field=exc.field)

    @bp.errorhandler(BackendUnavailable)
    def on_unavailable(exc: BackendUnavailable):
        log.error("status page: %s", exc)
        return _page("error.html", 503, title="State backend unavailable",
                     message="The state database cannot be reached; see the server log.")

    @bp.errorhandler(AsoError)
    def on_aso_error(exc: AsoError):
        status = exc.http_status if 400 <= exc.http_status < 600 else 500
        if status >= 500:
            log.error("status page %s failed: %s", request.path, exc)
            return _page("error.html", status, title="Error", message="The page failed; see the server log.")
        return _page("error.html", status, title="Error", message=str(exc))

    @bp.errorhandler(Exception)
    def on_unexpected(exc: Exception):
        log.exception("status page %s failed", request.path)
        return _page("error.html", 500, title="Internal error", message="The page failed; see the server log.")

    bp.add_app_template_filter(_age, "age")
    bp.add_app_template_filter(_size, "size")
    bp.add_app_template_filter(_utc, "utc")
    return bp


def _page(template: str, status: int, **context: Any) -> Response:
    viewer = getattr(g, "viewer", None)
    html = render_template(template, viewer=viewer, can_logout=viewer is not None and viewer is not LOCAL_VIEWER,
                           logout_csrf=session.get("csrf", "") if viewer is not None else "", **context)
    return Response(html, status=status, mimetype="text/html")


def _csrf_token() -> str:
    token = session.get("csrf")
    if not isinstance(token, str):
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def _csrf_ok() -> bool:
    expected, given = session.get("csrf"), request.form.get("csrf", "")
    return isinstance(expected, str) and isinstance(given, str) and hmac.compare_digest(expected.encode(), given.encode())


def _same_origin() -> bool:
    """A POST that names its origin must come from this site (SameSite=Strict already keeps
    the cookie off cross-site posts; this also covers the login form, before any session)."""
    origin = request.headers.get("Origin")
    if origin is None:  # not a browser, or one too old to say: the CSRF token decides
        return True
    return origin.rstrip("/") == request.host_url.rstrip("/")


def _state_param() -> TransferState | None:
    value = request.args.get("state", "")
    if value == "":
        return None
    if len(value) > 20 or not value.replace("_", "").isalpha():
        raise ValidationError("state", f"{value[:20]!r} is not a transfer state (one of {', '.join(TransferState.__members__)})")
    return TransferState.parse(value, "state")


def _page_param() -> int:
    value = request.args.get("page", "1")
    try:
        page = validate.non_negative_int(value, "page", 1_000_000)
    except ValidationError:
        page = 0
    if page < 1:
        raise ValidationError("page", f"{value[:20]!r} is not a page number (1, 2, ...)")
    return page


def _bars(buckets: list[queries.Bucket], width: int = 480, height: int = 80) -> dict[str, Any]:
    """An SVG bar chart's geometry (drawn by the template: no script, no inline style)."""
    peak = max((b.files for b in buckets), default=0) or 1
    step = width / max(len(buckets), 1)
    bars = []
    for i, b in enumerate(buckets):
        h = round(b.files / peak * (height - 4), 1)
        bars.append({"x": round(i * step + 1, 1), "y": round(height - h, 1), "w": round(step - 2, 1), "h": h,
                     "files": b.files, "bytes": b.bytes, "start": b.start})
    return {"width": width, "height": height, "bars": bars, "peak": peak,
            "files": sum(b.files for b in buckets), "bytes": sum(b.bytes for b in buckets)}


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(max(seconds, 0))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "PB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} PB"


def _utc(t: float | None) -> str:
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + " UTC"
