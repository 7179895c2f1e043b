"""The CRAB-compatible REST state server.

Resources under ``/crabserver/<instance>/``, as CRAB's REST interface names them:
``filetransfers`` (ASO components and operators), ``fileusertransfers`` (users and the job
post-processing step), ``task`` and ``filemetadata``. Bodies may be form-encoded (lists as
repeated keys, as CRAB clients send) or JSON. Reads answer
``{"desc": {"columns": [...]}, "result": [[...], ...]}``.

Every request but ``/healthz`` is authenticated; each subresource names the roles allowed
to call it, and user-role calls only ever see or change the caller's own rows.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from aso import validate
from aso.errors import (
    AsoError,
    AuthenticationError,
    ForbiddenError,
    NotFoundError,
    TransitionError,
    ValidationError,
)
from aso.state.auth import Authenticator, BearerTokenAuthenticator, Identity
from aso.state.namespaces import Namespaces
from aso.state.records import TRANSFER_COLUMNS, PublicationUpdate, TransferUpdate
from aso.state.schema import TASK_COLUMNS
from aso.state.store import Store

log = logging.getLogger("aso.server")

SERVICE = frozenset({"service"})
STAFF = frozenset({"service", "operator"})
ANYONE = frozenset({"service", "operator", "user"})


@dataclass
class ServerSettings:
    max_body_bytes: int = 16 * 1024 * 1024
    max_batch: int = 10000
    namespaces: Namespaces = field(default_factory=Namespaces)


#: deeper JSON than this is refused; no request of this API nests more than 4 levels
MAX_JSON_DEPTH = 32


def _refuse_constant(name: str) -> Any:
    raise ValidationError("body", f"{name} is not a JSON number this API accepts")


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of parsed JSON, iteratively, stopping once past ``limit``."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return depth
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def parse_json_body(data: bytes) -> Any:
    """A request body as JSON, or a ValidationError naming ``body``: never a server error.

    NaN and Infinity are refused, and so is nesting deeper than MAX_JSON_DEPTH (the
    decoder itself recurses, so a 100,000-deep body fails there first; both are a 400).
    """
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise ValidationError("body", "not UTF-8") from None
    except RecursionError:
        raise ValidationError("body", f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:
        raise ValidationError("body", f"not valid JSON ({str(exc)[:80]})") from None
    if _depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise ValidationError("body", f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def _flag(value: Any, field: str) -> int | None:
    """A 0/1 flag from JSON (0, 1, true, false) or a form ("0", "1"); None when absent."""
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value in (0, 1):
        return value
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return int(value.strip())
    raise ValidationError(field, "expected 0 or 1")


# -- request parameters ------------------------------------------------------------------
class Params:
    """Parameters of one request, from the query string, a form body or a JSON body."""

    def __init__(self, req):
        self._json: dict[str, Any] | None = None
        self._form = None
        if req.method == "GET":
            self._form = req.args
        elif req.is_json:
            body = parse_json_body(req.get_data())
            if isinstance(body, list):
                body = {"transfers": body}
            if not isinstance(body, dict):
                raise ValidationError("body", "expected a JSON object")
            self._json = body
        else:
            self._form = req.form
        self.args = req.args

    def get(self, name: str, default: Any = None, required: bool = False) -> Any:
        if self._json is not None:
            value = self._json.get(name, self.args.get(name, default))
        else:
            value = self._form.get(name, self.args.get(name, default))
        if required and value in (None, ""):
            raise ValidationError(name, "is required")
        return value

    def getlist(self, name: str) -> list[Any] | None:
        if self._json is not None:
            if name not in self._json:
                return None
            value = self._json[name]
            if isinstance(value, str):
                # CRAB clients sometimes send a list as one comma-separated string
                value = [v for v in value.split(",") if v]
            if not isinstance(value, list):
                raise ValidationError(name, "expected a list")
            return value
        if name not in self._form and name not in self.args:
            return None
        return self._form.getlist(name) or self.args.getlist(name)

    def json_list(self, name: str) -> list[Any]:
        if self._json is None:
            raise ValidationError(name, "send a JSON body for this call")
        value = self._json.get(name)
        if not isinstance(value, list):
            raise ValidationError(name, "expected a JSON list")
        return value

    def integer(self, name: str, default: int | None = None, required: bool = False) -> int | None:
        value = self.get(name, default, required)
        if value is None or (value == "" and not required):
            return default
        return validate.non_negative_int(value, name)


def _table(columns: list[str], rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"desc": {"columns": columns}, "result": [[r.get(c) for c in columns] for r in rows]}


def _optional(value: Any) -> Any:
    # Form bodies cannot carry null: an empty string stands for "not given".
    return None if value in ("", None, "None", "null") else value


class Api:
    """Subresource handlers; each returns a JSON-able answer."""

    def __init__(self, store: Store, settings: ServerSettings):
        self.store = store
        self.settings = settings

    # utilities
    def _batch(self, name: str, values: list | None) -> list:
        if values is None:
            raise ValidationError(name, "is required")
        if len(values) > self.settings.max_batch:
            raise ValidationError(name, f"{len(values)} items; at most {self.settings.max_batch} per call")
        return values

    @staticmethod
    def _worker(p: Params) -> str:
        return validate.worker(p.get("asoworker", required=True))

    def _aligned(self, p: Params, required: str, optional: list[str]) -> tuple[list, Callable[[str, int], Any]]:
        """``list_of_ids`` and the lists aligned with it (CRAB's parallel-list encoding).

        Returns the ids and ``at(name, i)``, the i-th value of a list (None when the list was
        not sent or the value is empty).
        """
        ids = self._batch("list_of_ids", p.getlist("list_of_ids"))
        lists = {}
        for name in [required, *optional]:
            values = p.getlist(name)
            if values is not None and len(values) != len(ids):
                raise ValidationError(name, f"has {len(values)} items but list_of_ids has {len(ids)}")
            lists[name] = values
        if lists[required] is None:
            raise ValidationError(required, "is required")

        def at(name: str, i: int) -> Any:
            values = lists[name]
            return _optional(values[i]) if values is not None else None

        return ids, at

    # filetransfers: the pipeline
    def acquire_transfers(self, p: Params, who: Identity) -> Any:
        worker = self._worker(p)
        users = p.getlist("username") or p.getlist("users") or self.store.active_users(worker=worker)
        limit = p.integer("limit", 1000)
        return {"result": [{"modified": self.store.acquire_transfers(users, limit, worker=worker)}]}

    def acquired_transfers(self, p: Params, who: Identity) -> Any:
        worker = self._worker(p)
        rows = self.store.acquired_transfers(p.get("username"), p.integer("limit", 1000), worker=worker)
        return _table(TRANSFER_COLUMNS, rows)

    def active_users(self, p: Params, who: Identity) -> Any:
        users = self.store.active_users(worker=self._worker(p))
        return _table(["username"], [{"username": u} for u in users])

    def update_transfers(self, p: Params, who: Identity) -> Any:
        worker = self._worker(p)
        ids, at = self._aligned(p, "list_of_transfer_state", [
            "list_of_failure_reason", "list_of_retry_value", "list_of_fts_instance",
            "list_of_fts_id", "list_of_expected_state", "list_of_expected_fts_id",
        ])
        updates = [
            TransferUpdate(
                id=row_id,
                state=at("list_of_transfer_state", i),
                reason=at("list_of_failure_reason", i),
                retry_increment=at("list_of_retry_value", i) or 0,
                fts_id=at("list_of_fts_id", i),
                fts_instance=at("list_of_fts_instance", i),
                expect_state=at("list_of_expected_state", i),
                expect_fts_id=at("list_of_expected_fts_id", i),
            )
            for i, row_id in enumerate(ids)
        ]
        result = self.store.update_transfers(updates, worker=worker)
        return {"result": [{"modified": len(result.updated), "updated": result.updated, "skipped": result.skipped}]}

    def retry_transfers(self, p: Params, who: Identity) -> Any:
        modified = self.store.retry_transfers(p.integer("time_to", required=True), worker=self._worker(p))
        return {"result": [{"modified": modified}]}

    def stuck_transfers(self, p: Params, who: Identity) -> Any:
        states = p.getlist("state") or ["ACQUIRED", "SUBMITTED"]
        rows = self.store.stuck_transfers(
            states, p.integer("older_than", required=True), p.integer("limit", 10000), worker=self._worker(p)
        )
        return _table(TRANSFER_COLUMNS, rows)

    def release_transfers(self, p: Params, who: Identity) -> Any:
        ids = self._batch("list_of_ids", p.getlist("list_of_ids"))
        return {"result": [{"modified": self.store.release_transfers(ids, worker=self._worker(p))}]}

    def transfers_to_kill(self, p: Params, who: Identity) -> Any:
        limit = min(p.integer("limit", 5000), 5000)
        return _table(TRANSFER_COLUMNS, self.store.transfers_to_kill(limit))

    def mark_killed(self, p: Params, who: Identity) -> Any:
        ids = self._batch("list_of_ids", p.getlist("list_of_ids"))
        return {"result": [{"modified": self.store.mark_killed(ids, _optional(p.get("reason")))}]}

    # kills and retries (operators, and users on their own rows)
    def _task_or_ids(self, p: Params, ids_key: str) -> tuple[str | None, list[str] | None]:
        task = _optional(p.get("taskname") or p.get("workflow"))
        ids = p.getlist(ids_key)
        if ids is not None:
            self._batch(ids_key, ids)
        return task, ids

    def kill_transfers(self, p: Params, who: Identity) -> Any:
        task, ids = self._task_or_ids(p, "list_of_ids")
        result = self.store.request_kill(task=task, ids=ids, owner=who.owner_filter)
        return {"result": [{"killed": result.killed, "failedKill": result.failed_kill}]}

    def kill_transfers_by_id(self, p: Params, who: Identity) -> Any:
        ids = self._batch("listOfIds", p.getlist("listOfIds") or p.getlist("list_of_ids"))
        result = self.store.request_kill(ids=ids, owner=who.owner_filter)
        return {"result": [{"killed": result.killed, "failedKill": result.failed_kill}]}

    def retry_failed(self, p: Params, who: Identity) -> Any:
        task, ids = self._task_or_ids(p, "list_of_ids")
        return {"result": [{"modified": self.store.retry_failed(task=task, ids=ids, owner=who.owner_filter)}]}

    def retry_publication(self, p: Params, who: Identity) -> Any:
        task, ids = self._task_or_ids(p, "list_of_ids")
        return {"result": [{"modified": self.store.retry_publication(task=task, ids=ids, owner=who.owner_filter)}]}

    # publication
    def acquire_publication(self, p: Params, who: Identity) -> Any:
        return {"result": [{"modified": self.store.acquire_publication(worker=self._worker(p))}]}

    def acquired_publication(self, p: Params, who: Identity) -> Any:
        rows = self.store.acquired_publication(p.get("username"), p.integer("limit", 100000), worker=self._worker(p))
        return _table(TRANSFER_COLUMNS, rows)

    def update_publication(self, p: Params, who: Identity) -> Any:
        worker = self._worker(p)
        ids, at = self._aligned(p, "list_of_publication_state", [
            "list_of_failure_reason", "list_of_retry_value", "list_of_block_name", "list_of_publish_flag",
        ])
        flag = _flag(_optional(p.get("publish_flag")), "publish_flag")
        updates = []
        for i, row_id in enumerate(ids):
            publish = _flag(at("list_of_publish_flag", i), f"list_of_publish_flag[{i}]")
            publish = flag if publish is None else publish
            updates.append(
                PublicationUpdate(
                    id=row_id,
                    state=at("list_of_publication_state", i),
                    reason=at("list_of_failure_reason", i),
                    retry_increment=at("list_of_retry_value", i) or 0,
                    block_name=at("list_of_block_name", i),
                    publish_flag=publish,
                )
            )
        result = self.store.update_publication(updates, worker=worker)
        return {"result": [{"modified": len(result.updated), "updated": result.updated, "skipped": result.skipped}]}

    # reads
    def statistics(self, p: Params, who: Identity) -> Any:
        rows = self.store.statistics(user=p.get("username"), task=p.get("taskname"), owner=who.owner_filter)
        return _table(["username", "taskname", "transfer_state", "publication_state", "count"], rows)

    def grouped_publish_statistics(self, p: Params, who: Identity) -> Any:
        rows = self.store.statistics(user=p.get("username"), task=p.get("taskname"), owner=who.owner_filter)
        merged: dict[tuple, int] = {}
        for r in rows:
            key = (r["username"], r["taskname"], r["publication_state"])
            merged[key] = merged.get(key, 0) + r["count"]
        out = [{"username": k[0], "taskname": k[1], "publication_state": k[2], "count": n} for k, n in merged.items()]
        return _table(["username", "taskname", "publication_state", "count"], out)

    def get_by_id(self, p: Params, who: Identity) -> Any:
        ids = p.getlist("id") or p.getlist("list_of_ids")
        if not ids:
            raise ValidationError("id", "is required")
        self._batch("id", ids)
        return _table(TRANSFER_COLUMNS, self.store.get_transfers(ids, owner=who.owner_filter))

    def list_transfers(self, p: Params, who: Identity) -> Any:
        rows = self.store.list_transfers(
            user=_optional(p.get("username")),
            task=_optional(p.get("taskname")),
            states=p.getlist("state"),
            limit=min(p.integer("limit", 10000), self.settings.max_batch * 10),
            owner=who.owner_filter,
        )
        return _table(TRANSFER_COLUMNS, rows)

    def transfer_status(self, p: Params, who: Identity) -> Any:
        columns = ["tm_id", "tm_jobid", "tm_transfer_state", "tm_start_time", "tm_last_update", "tm_fts_id", "tm_fts_instance", "tm_aso_worker", "tm_transfer_failure_reason"]
        rows = self.store.list_transfers(user=p.get("username", required=True), task=p.get("taskname", required=True), limit=1_000_000, owner=who.owner_filter)
        return _table(columns, rows)

    def publication_status(self, p: Params, who: Identity) -> Any:
        columns = ["tm_id", "tm_jobid", "tm_publication_state", "tm_publication_failure_reason", "tm_dbs_blockname"]
        rows = self.store.list_transfers(user=p.get("username", required=True), task=p.get("taskname", required=True), limit=1_000_000, owner=who.owner_filter)
        return _table(columns, rows)

    # injection
    def inject(self, p: Params, who: Identity) -> Any:
        if p._json is not None:
            requests = p.json_list("transfers") if "transfers" in p._json else [p._json]
        else:
            requests = [{k: p.get(k) for k in p._form}]
        self._batch("transfers", requests)
        namespaces = self.settings.namespaces
        result = self.store.inject(
            requests,
            owner=who.owner_filter,
            check=lambda i, row: namespaces.check_injection(who, i, row),
            confine_tasks=who.role != "service",
        )
        return {"result": [{"inserted": result.inserted, "reinitialised": result.reinitialised, "skipped": result.skipped}]}

    # tasks and metadata
    def task_search(self, p: Params, who: Identity) -> Any:
        name = p.get("workflow") or p.get("taskname")
        if not name:
            raise ValidationError("workflow", "is required")
        task = self.store.get_task(name)
        if task and who.owner_filter and task["tm_username"] != who.owner_filter:
            task = None
        return _table(TASK_COLUMNS, [task] if task else [])

    def task_upsert(self, p: Params, who: Identity) -> Any:
        items = p.json_list("tasks")
        self._batch("tasks", items)
        return {"result": [{"modified": self.store.upsert_tasks(items)}]}

    def update_publication_time(self, p: Params, who: Identity) -> Any:
        name = p.get("workflow") or p.get("taskname")
        if not name:
            raise ValidationError("workflow", "is required")
        modified = self.store.update_last_publication(name, p.integer("publicationtime"))
        return {"result": [{"modified": modified}]}

    def metadata_get(self, p: Params, who: Identity) -> Any:
        lfns = self._batch("lfnList", p.getlist("lfnList"))
        found = self.store.get_file_metadata(lfns)
        return _table(["lfn", "metadata"], [{"lfn": k, "metadata": v} for k, v in found.items()])

    def metadata_put(self, p: Params, who: Identity) -> Any:
        entries = p.json_list("transfers") if "transfers" in (p._json or {}) else p.json_list("entries")
        self._batch("entries", entries)
        return {"result": [{"modified": self.store.put_file_metadata(entries)}]}


#: (resource, method, subresource) -> (handler name, roles allowed). Reads and kills open to
#: users are confined to their own rows by the handlers (Identity.owner_filter).
ROUTES: dict[tuple[str, str, str], tuple[str, frozenset[str]]] = {
    ("filetransfers", "POST", "acquireTransfers"): ("acquire_transfers", SERVICE),
    ("filetransfers", "POST", "updateTransfers"): ("update_transfers", SERVICE),
    ("filetransfers", "POST", "retryTransfers"): ("retry_transfers", SERVICE),
    ("filetransfers", "POST", "releaseTransfers"): ("release_transfers", SERVICE),
    ("filetransfers", "POST", "markKilled"): ("mark_killed", SERVICE),
    ("filetransfers", "POST", "acquirePublication"): ("acquire_publication", SERVICE),
    ("filetransfers", "POST", "updatePublication"): ("update_publication", SERVICE),
    ("filetransfers", "POST", "killTransfers"): ("kill_transfers", ANYONE),
    ("filetransfers", "POST", "retryFailed"): ("retry_failed", STAFF),
    ("filetransfers", "POST", "retryPublication"): ("retry_publication", STAFF),
    ("filetransfers", "GET", "acquiredTransfers"): ("acquired_transfers", SERVICE),
    ("filetransfers", "GET", "acquiredPublication"): ("acquired_publication", SERVICE),
    ("filetransfers", "GET", "activeUsers"): ("active_users", SERVICE),
    ("filetransfers", "GET", "stuckTransfers"): ("stuck_transfers", SERVICE),
    ("filetransfers", "GET", "getTransfersToKill"): ("transfers_to_kill", SERVICE),
    ("filetransfers", "GET", "groupedTransferStatistics"): ("statistics", ANYONE),
    ("filetransfers", "GET", "groupedPublishStatistics"): ("grouped_publish_statistics", ANYONE),
    ("filetransfers", "GET", "getById"): ("get_by_id", ANYONE),
    ("filetransfers", "POST", "getById"): ("get_by_id", ANYONE),
    ("filetransfers", "GET", "listTransfers"): ("list_transfers", ANYONE),
    ("fileusertransfers", "PUT", ""): ("inject", ANYONE),
    ("fileusertransfers", "POST", "updateDoc"): ("inject", ANYONE),
    ("fileusertransfers", "POST", "killTransfers"): ("kill_transfers", ANYONE),
    ("fileusertransfers", "POST", "killTransfersById"): ("kill_transfers_by_id", ANYONE),
    ("fileusertransfers", "POST", "retryTransfers"): ("retry_failed", STAFF),
    ("fileusertransfers", "GET", "getById"): ("get_by_id", ANYONE),
    ("fileusertransfers", "POST", "getById"): ("get_by_id", ANYONE),
    ("fileusertransfers", "GET", "getTransferStatus"): ("transfer_status", ANYONE),
    ("fileusertransfers", "GET", "getPublicationStatus"): ("publication_status", ANYONE),
    ("fileusertransfers", "GET", "listTransfers"): ("list_transfers", ANYONE),
    ("fileusertransfers", "GET", "groupedTransferStatistics"): ("statistics", ANYONE),
    ("task", "GET", "search"): ("task_search", ANYONE),
    ("task", "PUT", ""): ("task_upsert", SERVICE),
    ("task", "POST", "updatepublicationtime"): ("update_publication_time", SERVICE),
    ("filemetadata", "GET", ""): ("metadata_get", STAFF),
    ("filemetadata", "POST", "lookup"): ("metadata_get", STAFF),
    ("filemetadata", "PUT", ""): ("metadata_put", SERVICE),
}


def _error_response(status: int, message: str, **extra: Any) -> Response:
    body = {"error": message, **{k: v for k, v in extra.items() if v is not None}}
    return Response(json.dumps(body), status=status, mimetype="application/json")


def create_app(
    store: Store,
    authenticator: Authenticator,
    settings: ServerSettings | None = None,
    instance: str | None = None,
) -> Flask:
    """The WSGI app serving ``store``; ``instance`` pins the <instance> path part if given."""
    settings = settings or ServerSettings()
    api = Api(store, settings)
    app = Flask("aso.state.server")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes

    @app.before_request
    def authenticate():
        # Before routing: a caller without a valid token learns nothing, not even which
        # paths or instances exist.
        if request.path == "/healthz":
            return
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
        route = ROUTES.get((resource, request.method, sub))
        if route is None:
            known = sorted(s for (r, m, s) in ROUTES if r == resource and m == request.method)
            if not known:
                raise NotFoundError(f"no resource {resource!r} for {request.method}")
            raise ValidationError("subresource", f"{sub!r} is not one of {', '.join(known) or '(none)'}")
        handler_name, roles = route
        if who.role not in roles:
            raise ForbiddenError(f"{who.name} ({who.role}) may not call {resource} {sub or request.method}; allowed: {', '.join(sorted(roles))}")
        handler: Callable[[Params, Identity], Any] = getattr(api, handler_name)
        return handler(params, who)

    @app.errorhandler(AsoError)
    def on_aso_error(exc: AsoError):
        if isinstance(exc, ValidationError):
            return _error_response(400, str(exc), field=exc.field, problem=exc.problem)
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

    return app


def app_from_config(config) -> Flask:
    """The app an ``aso server`` (or gunicorn) serves for a loaded configuration."""
    from aso.errors import ConfigError

    db_url = config.server.db_url or config.state.url
    if db_url.startswith(("http://", "https://")):
        raise ConfigError("server.db_url: the server needs a database URL (state.url points at a REST server)")
    if not config.server.tokens:
        raise ConfigError("server.tokens: no tokens configured; every request would be refused")
    return create_app(
        Store(db_url, max_retry=config.transfer.max_retry, publication_max_retry=config.publisher.max_retry),
        BearerTokenAuthenticator(config.server.tokens),
        ServerSettings(
            max_body_bytes=config.server.max_body_bytes,
            max_batch=config.server.max_batch,
            namespaces=Namespaces.from_config(config.server),
        ),
        instance=config.aso.instance,
    )


def app_from_env() -> Flask:
    """Entry point for gunicorn: ``gunicorn -w 4 'aso.state.server:app_from_env()'``."""
    from aso.config import load_config

    return app_from_config(load_config(os.environ.get("ASO_CONFIG")))
