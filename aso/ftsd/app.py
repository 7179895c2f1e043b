"""The REST face of the embedded FTS service: FTS3's paths, fields, states and errors.

Authorization follows FTS3's "vo" level: a caller sees and cancels the jobs of its VOs.
Without VOMS attributes the VO is the caller's delegation id, so in practice users see
their own jobs only.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import TYPE_CHECKING

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from aso.ftsd import jobs as fj
from aso.ftsd.db import FILE_KEYS, JOB_KEYS
from aso.ftsd.delegation import bp as delegation_bp
from aso.ftsd.delegation import require_usable_delegation
from aso.ftsd.errors import FtsHttpError, reason_phrase
from aso.ftsd.identity import Identity, identity_from_environ
from aso.ftsd.jobs import MAX_INT
from aso.ftsd.jsonbody import MAX_BODY_BYTES, parse_json
from aso.logs import log_requests
from aso.metrics import names
from aso.metrics.collectors import CachedCollector, ExecutorCollector, fts_store_gauges
from aso.metrics.server import instrument

if TYPE_CHECKING:
    from aso.ftsd.service import FtsService

log = logging.getLogger("aso.fts.api")

API_VERSION = {"major": 3, "minor": 13, "patch": 4}
LISTING_LIMIT = 500
#: most ids one bulk request may name (GET, DELETE, POST /jobs/<ids>, file ids)
MAX_IDS = 10_000
_OK = "200 Ok"
_NOT_MODIFIED = "304 Not Modified"
#: FTS3's message for a cancel or a priority change asked of a finished job
TERMINAL_MESSAGE = "The job is in a terminal state"


#: FTS3 routes this service does not serve (docs/fts-server.md, "Who calls what"): each answers
#: as FTS3 answers an unknown route, 404 with a JSON body, and its message says why
UNSUPPORTED_ROUTES = (
    ("/jobs/all", ("DELETE",)),
    ("/jobs/vo/<vo>", ("DELETE",)),
    ("/ban/se", ("GET", "POST", "DELETE")),
    ("/ban/dn", ("GET", "POST", "DELETE")),
    ("/config/<path:rest>", ("GET", "POST", "DELETE")),
    ("/optimizer", ("GET",)),
    ("/optimizer/<path:rest>", ("GET", "POST")),
    ("/archive", ("GET",)),
    ("/archive/<path:rest>", ("GET",)),
    ("/files", ("GET",)),
    ("/dm/<path:rest>", ("GET", "POST")),
    ("/snapshot", ("GET",)),
    ("/api-docs/<path:rest>", ("GET",)),
    ("/delegation/<dlg_id>/voms", ("POST",)),
)


def _per_job(job: dict, status: str = _OK, message: str | None = None) -> dict:
    """A job as one element of a per-job answer: FTS3 puts both keys on every element
    (Rucio reads ``http_message`` after a priority change), null message on success."""
    return {**job, "http_status": status, "http_message": message}


def versions_document() -> dict:
    return {
        "delegation": {"major": 1, "minor": 0, "patch": 0},
        "api": dict(API_VERSION),
        "core": dict(API_VERSION),
        "schema": dict(API_VERSION),
        "_links": {
            "curies": [{"name": "fts", "href": "https://gitlab.cern.ch/fts/fts3"}],
            "fts:whoami": {"href": "/whoami", "title": "Check user certificate"},
            "fts:joblist": {"href": "/jobs{?vo_name,user_dn,dlg_id,state_in}", "title": "List of active jobs", "templated": True},
            "fts:job": {"href": "/jobs/{id}", "title": "Job information", "templated": True},
        },
    }


def _caller() -> Identity:
    identity = getattr(g, "identity", None)
    if identity is None:
        raise FtsHttpError(401, "A valid X509 certificate or proxy is needed")
    return identity


def _visible(job: dict, identity: Identity) -> bool:
    return job["vo_name"] in identity.vos or job["user_dn"] == identity.user_dn


def _job_error(job_id: str, status: int, message: str) -> dict:
    return {"job_id": job_id, "http_status": f"{status} {reason_phrase(status)}", "http_message": message}


def _split_ids(text: str) -> list[str]:
    ids = [i for i in (p.strip() for p in text.split(",")) if i]
    if not ids:
        raise FtsHttpError(400, "Invalid value within the request: no job id given")
    if len(ids) > MAX_IDS:
        raise FtsHttpError(400, f"Invalid value within the request: more than {MAX_IDS} job ids")
    return list(dict.fromkeys(ids))


_FILE_ID = re.compile(r"[0-9]{1,19}")


def _file_id(text: str) -> int:
    """A file id from a URL: ASCII digits, a 64-bit integer."""
    text = text.strip()
    if not _FILE_ID.fullmatch(text) or int(text) > MAX_INT:
        raise FtsHttpError(400, f"Invalid value within the request: file id {text[:40]!r} (an integer from 0 to {MAX_INT})")
    return int(text)


def _json_response(data, status: int = 200) -> Response:
    return Response(json.dumps(data), status=status, mimetype="application/json")


def create_app(service: FtsService) -> Flask:
    app = Flask("aso.ftsd")
    log_requests(app, logging.getLogger("aso.fts.requests"), lambda: getattr(g.get("identity"), "user_dn", None))
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["aso_credentials"] = service.credentials
    app.register_blueprint(delegation_bp)
    store, executor = service.store, service.executor

    @app.before_request
    def _identify():
        g.identity = service.local_identity or identity_from_environ(request.environ)

    @app.errorhandler(FtsHttpError)
    def _fts_error(exc: FtsHttpError):
        return jsonify(exc.body()), exc.status

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        return jsonify({"status": f"{exc.code} {reason_phrase(exc.code or 500)}", "message": exc.description}), exc.code

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        # The traceback is for the service's log; the client learns nothing of the code.
        log.exception("%s %s failed", request.method, request.path)
        return jsonify({"status": "500 Internal Server Error", "message": "internal error; see the service log"}), 500

    def _unsupported(**_kwargs):
        raise FtsHttpError(404, f"{request.method} {request.path} is an FTS3 call that aso fts-server does not support")

    for rule, methods in UNSUPPORTED_ROUTES:
        app.add_url_rule(rule, endpoint=f"unsupported {rule}", view_func=_unsupported, methods=list(methods))

    @app.get("/")
    def versions():
        return jsonify(versions_document())

    # -- submission ---------------------------------------------------------------------

    @app.route("/jobs", methods=["POST", "PUT"])
    def submit():
        identity = _caller()
        require_usable_delegation(service.credentials, identity)
        spec = fj.parse_submission(parse_json(request.get_data()), roots=service.settings.roots)
        job_id = store.submit(spec, identity)
        log.info("job %s submitted by %s: %d file(s)", job_id, identity.user_dn, len(spec.files),
                 extra={"fts_job": job_id})
        executor.wake()
        if spec.staging:
            service.robot.wake()
        return jsonify({"job_id": job_id})

    @app.get("/status/hosts")
    def status_hosts():
        # FTS3 answers {host: {"active": n, "staging": n}} for its hosts; this service is one
        _caller()
        counts = store.staging_counts()
        return jsonify(counts or {store.host: {"active": 0, "staging": 0}})

    # -- reading ------------------------------------------------------------------------

    def _jobs_for(ids: list[str], identity: Identity, action: str) -> tuple[dict[str, dict], dict[str, dict]]:
        """(visible jobs, error elements) for the ids asked for."""
        found = store.jobs(ids)
        errors: dict[str, dict] = {}
        for job_id in ids:
            job = found.get(job_id)
            if job is None:
                errors[job_id] = _job_error(job_id, 404, f'No job with the id "{job_id}" has been found')
            elif not _visible(job, identity):
                errors[job_id] = _job_error(job_id, 403, f'Not enough permissions to {action} the job "{job_id}"')
                found.pop(job_id)
        return found, errors

    def _answer(ids: list[str], found: dict[str, dict], errors: dict[str, dict]) -> Response:
        if len(ids) == 1:
            job_id = ids[0]
            if job_id in errors:
                err = errors[job_id]
                return _json_response(err, int(err["http_status"].split()[0]))
            return _json_response(found[job_id])
        elements = [errors.get(j) or found[j] for j in ids]
        return _json_response(elements, 207 if errors else 200)

    @app.get("/jobs/<job_list>")
    def get_jobs(job_list: str):
        identity = _caller()
        ids = _split_ids(job_list)
        found, errors = _jobs_for(ids, identity, "check")
        wanted = request.args.get("files")
        keys = [k for k in (wanted or "").split(",") if k in FILE_KEYS]
        files = store.files(list(found), keys) if wanted is not None else {}
        for job_id, job in found.items():
            if wanted is not None:
                job["files"] = files[job_id]
            found[job_id] = _per_job(job)
        return _answer(ids, found, errors)

    def _one_job(job_id: str, action: str = "check") -> dict:
        found, errors = _jobs_for([job_id], _caller(), action)
        if job_id in errors:
            err = errors[job_id]
            raise FtsHttpError(int(err["http_status"].split()[0]), err["http_message"])
        return found[job_id]

    @app.get("/jobs/<job_id>/files")
    def get_files(job_id: str):
        _one_job(job_id)
        return _json_response(store.files([job_id])[job_id])

    @app.get("/jobs/<job_id>/dm")
    def get_dm(job_id: str):
        _one_job(job_id)
        return _json_response([])

    @app.get("/jobs/<job_id>/files/<file_id>/retries")
    def get_retries(job_id: str, file_id: str):
        _one_job(job_id)
        return _json_response(store.retries(job_id, _file_id(file_id)))

    @app.get("/jobs/<job_id>/<field>")
    def get_field(job_id: str, field: str):
        job = _one_job(job_id)
        if field not in JOB_KEYS:
            raise FtsHttpError(404, "No such field")
        return _json_response(job[field])

    @app.get("/jobs")
    def listing():
        identity = _caller()
        args = request.args
        user_dn, dlg_id = args.get("user_dn"), args.get("dlg_id")
        if dlg_id and dlg_id != identity.delegation_id:
            raise FtsHttpError(403, "The provided delegation id does not match your delegation id")
        if user_dn and user_dn != identity.user_dn:
            raise FtsHttpError(400, "The provided DN and delegation id do not correspond to the same user")
        asked = [s for s in (args.get("state_in") or "").split(",") if s]
        # unknown states match no job (and a long list would not become a long query)
        states = [s for s in (*fj.JOB_ACTIVE, *fj.JOB_TERMINAL) if s in asked] if asked else list(fj.JOB_ACTIVE)
        limit = args.get("limit")
        if limit is not None:
            if not re.fullmatch(r"\s*[0-9]{1,19}\s*", limit):
                raise FtsHttpError(400, f"Invalid value within the request: limit {limit[:40]!r}")
            limit = min(LISTING_LIMIT, int(limit))
        finished_after = None
        window = args.get("time_window")
        if window:
            m = re.fullmatch(r"\s*([0-9]{1,9})(?::([0-9]{1,9}))?\s*", window)
            if not m:
                raise FtsHttpError(400, f"Invalid value within the request: time_window {window[:40]!r} (H or H:M)")
            finished_after = time.time() - int(m.group(1)) * 3600 - int(m.group(2) or 0) * 60
        elif limit is None:
            # as FTS3: finished jobs only within a time window (or with an explicit limit)
            states = [s for s in states if s not in fj.JOB_TERMINAL]
        vo = args.get("vo_name")
        vos = [v for v in identity.vos if v == vo] if vo else list(identity.vos)
        jobs = store.list_jobs(
            vo_names=vos, user_dn=user_dn, dlg_id=dlg_id, states=states, source_se=args.get("source_se"),
            dest_se=args.get("dest_se"), finished_after=finished_after, limit=limit if limit is not None else LISTING_LIMIT,
        )
        fields = [f for f in (args.get("fields") or "").split(",") if f]
        if fields:
            jobs = [{k: j.get(k) for k in fields} for j in jobs]
        return _json_response(jobs)

    # -- changing -----------------------------------------------------------------------

    @app.delete("/jobs/<job_list>")
    def cancel(job_list: str):
        identity = _caller()
        ids = _split_ids(job_list)
        found, errors = _jobs_for(ids, identity, "cancel")
        terminal = {j for j, job in found.items() if job["job_state"] in fj.JOB_TERMINAL}
        after, interrupted = store.cancel_jobs([j for j in found if j not in terminal])
        executor.interrupt(interrupted)
        for job_id in found:
            job = after.get(job_id, found[job_id])
            found[job_id] = _per_job(job, _NOT_MODIFIED, TERMINAL_MESSAGE) if job_id in terminal else _per_job(job)
        if found:
            log.info("jobs canceled by %s: %s", identity.user_dn, ", ".join(j for j in found if j not in terminal) or "none")
        return _answer(ids, found, errors)

    @app.delete("/jobs/<job_id>/files/<file_list>")
    def cancel_files(job_id: str, file_list: str):
        job = _one_job(job_id, "cancel")
        if job["job_type"] != "N":
            raise FtsHttpError(400, "Multiple replicas, multihop and reuse jobs can not be partially canceled")
        file_ids = list(dict.fromkeys(_file_id(f) for f in file_list.split(",") if f.strip()))
        if not file_ids:
            raise FtsHttpError(400, "Invalid value within the request: no file id given")
        if len(file_ids) > MAX_IDS:
            raise FtsHttpError(400, f"Invalid value within the request: more than {MAX_IDS} file ids")
        result, interrupted = store.cancel_files(job_id, file_ids)
        executor.interrupt(interrupted)
        answers = [result[f] or "File does not belong to the job" for f in file_ids]
        return _json_response(answers[0] if len(answers) == 1 else answers)

    @app.post("/jobs/<job_list>")
    def modify(job_list: str):
        identity = _caller()
        ids = _split_ids(job_list)
        body = parse_json(request.get_data())
        params = body.get("params") if isinstance(body, dict) else None
        if not isinstance(params, dict) or params.get("priority") is None:
            raise FtsHttpError(400, "Missing parameter: params.priority")
        priority = fj.clamp_priority(fj.parse_int(params["priority"], "priority", minimum=-MAX_INT))
        found, errors = _jobs_for(ids, identity, "modify")
        after, changed = store.set_priority(list(found), priority)
        for job_id in found:
            job = after[job_id]
            found[job_id] = _per_job(job) if job_id in changed else _per_job(job, _NOT_MODIFIED, TERMINAL_MESSAGE)
        if changed:
            log.info("priority of %d job(s) set to %d by %s", len(changed), priority, identity.user_dn)
            executor.wake()
        return _answer(ids, found, errors)

    # /metrics needs no certificate (Prometheus scrapes without one; the TLS layer asks for a
    # client certificate but does not require it, and _identify leaves g.identity None)
    instrument(
        app,
        requests_metric=names.FTS_REQUESTS,
        latency_metric=names.FTS_LATENCY,
        collectors=[CachedCollector(fts_store_gauges(store), service.settings.metrics_cache_seconds),
                    ExecutorCollector(executor)],
        token=service.settings.metrics_token,
    )
    return app
