"""A stand-in for Globus Auth and the Globus Transfer API on ``responses`` (Globus cannot run
here), answering with the documents the APIs document (shapes as in globus-sdk's own test
fixtures): a client-credentials token, ``task_list``, ``submission_id``, ``transfer``,
``task/<id>/successful_transfers`` and ``skipped_errors`` (marker paging with
``next_marker``), ``task/<id>/event_list`` and ``task/<id>/cancel``.

Submitted tasks are kept, so a test says how they end (:meth:`FakeGlobus.finish`) and the
answers follow."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

AUTH = "https://auth.globus.fake.test"
TRANSFER = "https://transfer.globus.fake.test/v0.10"
TOKEN_SCOPE = "urn:globus:auth:scope:transfer.api.globus.org:all"


def task_document(task_id: str, label: str, source: str, destination: str, files: int, status: str = "ACTIVE",
                  fatal_error: dict | None = None, skipped: int = 0) -> dict[str, Any]:
    return {
        "DATA_TYPE": "task", "task_id": task_id, "type": "TRANSFER", "status": status, "label": label,
        "source_endpoint_id": source, "destination_endpoint_id": destination,
        "request_time": "2026-11-30T10:00:00+00:00", "completion_time": None if status in ("ACTIVE", "INACTIVE") else
        "2026-11-30T10:05:00+00:00", "deadline": "2026-12-01T10:00:00+00:00", "files": files,
        "files_transferred": 0 if status != "SUCCEEDED" else files - skipped, "files_skipped": 0,
        "subtasks_total": files, "subtasks_succeeded": 0, "subtasks_failed": 0, "subtasks_skipped_errors": skipped,
        "fatal_error": fatal_error, "nice_status": None if status != "INACTIVE" else "PERMISSION_DENIED",
        "is_ok": status != "INACTIVE", "history_deleted": False,
    }


@dataclass
class FakeTask:
    doc: dict[str, Any]
    items: list[dict[str, Any]]
    #: paths (source) that ended in skipped_errors: error code and details
    skipped: dict[str, tuple[str, str]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    #: how many of the items (the first ones) Globus copied
    copied: int = 0


class FakeGlobus:
    def __init__(self, rsps, page_size: int = 2):
        self.rsps = rsps
        self.page_size = page_size
        self.tasks: dict[str, FakeTask] = {}
        self.tokens = 0
        self.valid_token = ""
        self.submissions: list[dict] = []
        self.canceled: list[str] = []
        #: answers to give before the real one, per (method, path tail): (status, headers)
        self.errors: dict[str, list[tuple[int, dict]]] = {}
        #: while true, a submission creates its task but its answer is lost on the way back
        #: (the connection drops): what a crash right after Globus accepted the task looks like
        self.lose_submission_answers = False
        base = re.escape(TRANSFER)
        rsps.add_callback("POST", f"{AUTH}/v2/oauth2/token", callback=self._token)
        rsps.add_callback("GET", re.compile(base + r"/task_list.*"), callback=self._task_list)
        rsps.add_callback("GET", f"{TRANSFER}/submission_id", callback=self._submission_id)
        rsps.add_callback("POST", f"{TRANSFER}/transfer", callback=self._transfer)
        rsps.add_callback("GET", re.compile(base + r"/task/[^/]+/(successful_transfers|skipped_errors).*"),
                          callback=self._paged)
        rsps.add_callback("GET", re.compile(base + r"/task/[^/]+/event_list.*"), callback=self._events)
        rsps.add_callback("POST", re.compile(base + r"/task/[^/]+/cancel"), callback=self._cancel)

    # -- what a test does -----------------------------------------------------------------

    def fail_next(self, kind: str, status: int, headers: dict | None = None) -> None:
        self.errors.setdefault(kind, []).append((status, headers or {}))

    def finish(self, task_id: str, status: str = "SUCCEEDED", skipped: dict[str, tuple[str, str]] | None = None,
               fatal_error: dict | None = None, events: list[dict] | None = None, copied: int | None = None) -> None:
        """The task ends: SUCCEEDED copied every item not skipped; FAILED those of the
        first ``copied`` items not skipped (none by default)."""
        task = self.tasks[task_id]
        task.copied = (len(task.items) if status == "SUCCEEDED" else 0) if copied is None else copied
        task.skipped = dict(skipped or {})
        task.events = list(events or [])
        task.doc.update(task_document(task_id, task.doc["label"], task.doc["source_endpoint_id"],
                                      task.doc["destination_endpoint_id"], len(task.items), status, fatal_error,
                                      len(task.skipped)))

    def add_task(self, label: str, source: str, destination: str, items: list[dict]) -> str:
        task_id = str(uuid.uuid4())
        self.tasks[task_id] = FakeTask(task_document(task_id, label, source, destination, len(items)), items)
        return task_id

    # -- the answers ------------------------------------------------------------------------

    def _error(self, kind: str):
        queue = self.errors.get(kind)
        if queue:
            status, headers = queue.pop(0)
            body = {"code": "RateLimited" if status == 429 else "AuthenticationFailed" if status == 401 else "Error",
                    "message": f"fake {status}", "request_id": "fake", "resource": kind}
            return status, headers, json.dumps(body)
        return None

    def _authorized(self, request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.valid_token}"

    def _token(self, request):
        body = parse_qs(request.body if isinstance(request.body, str) else request.body.decode())
        assert body["grant_type"] == ["client_credentials"], body
        assert request.headers["Authorization"].startswith("Basic "), request.headers
        self.tokens += 1
        self.valid_token = f"token-{self.tokens}"
        return 200, {}, json.dumps({"access_token": self.valid_token, "scope": TOKEN_SCOPE, "expires_in": 172800,
                                    "token_type": "Bearer", "resource_server": "transfer.api.globus.org",
                                    "other_tokens": []})

    def _guard(self, kind: str, request):
        error = self._error(kind)
        if error is not None:
            return error
        if not self._authorized(request):
            return 401, {}, json.dumps({"code": "AuthenticationFailed", "message": "Token is not active",
                                        "request_id": "fake", "resource": kind})
        return None

    def _task_list(self, request):
        blocked = self._guard("task_list", request)
        if blocked:
            return blocked
        query = parse_qs(urlsplit(request.url).query)
        clauses = dict(c.split(":", 1) for c in query.get("filter", [""])[0].split("/") if c)
        docs = [t.doc for t in self.tasks.values()]
        if "task_id" in clauses:
            wanted = set(clauses["task_id"].split(","))
            docs = [d for d in docs if d["task_id"] in wanted]
        if "label" in clauses:
            docs = [d for d in docs if d["label"] == clauses["label"]]
        return 200, {}, json.dumps({"DATA_TYPE": "task_list", "DATA": docs, "length": len(docs), "limit": 1000,
                                    "offset": 0, "total": len(docs)})

    def _submission_id(self, request):
        blocked = self._guard("submission_id", request)
        return blocked or (200, {}, json.dumps({"value": str(uuid.uuid4())}))

    def _transfer(self, request):
        blocked = self._guard("transfer", request)
        if blocked:
            return blocked
        body = json.loads(request.body)
        self.submissions.append(body)
        for task_id, task in self.tasks.items():  # the documented guard: one task per submission id
            if task.doc.get("submission_id") == body["submission_id"]:
                if self.lose_submission_answers:
                    raise requests.ConnectionError("connection reset")
                return 200, {}, json.dumps({"DATA_TYPE": "transfer_result", "code": "Duplicate", "task_id": task_id,
                                            "submission_id": body["submission_id"]})
        task_id = self.add_task(body["label"], body["source_endpoint"], body["destination_endpoint"], body["DATA"])
        self.tasks[task_id].doc["submission_id"] = body["submission_id"]
        if self.lose_submission_answers:
            raise requests.ConnectionError("connection reset after the task was created")
        return 202, {}, json.dumps({
            "DATA_TYPE": "transfer_result", "code": "Accepted", "message": "The transfer has been accepted and a task "
            "has been created and queued for execution", "request_id": "fake", "resource": "/v0.10/transfer",
            "submission_id": body["submission_id"], "task_id": task_id,
            "task_link": {"DATA_TYPE": "link", "href": f"/v0.10/task/{task_id}?format=json", "rel": "related",
                          "resource": "task", "title": "related task"}})

    def _paged(self, request):
        parts = urlsplit(request.url)
        task_id, kind = parts.path.split("/")[-2:]
        blocked = self._guard(kind, request)
        if blocked:
            return blocked
        task = self.tasks.get(task_id)
        if task is None:
            return 404, {}, json.dumps({"code": "ClientError.NotFound", "message": "Task not found",
                                        "request_id": "fake", "resource": kind})
        if kind == "successful_transfers":
            rows = [{"DATA_TYPE": "successful_transfer", "source_path": i["source_path"],
                     "destination_path": i["destination_path"]}
                    for i in task.items[:task.copied] if i["source_path"] not in task.skipped]
        else:
            rows = [{"DATA_TYPE": "skipped_error", "source_path": i["source_path"],
                     "destination_path": i["destination_path"], "error_code": task.skipped[i["source_path"]][0],
                     "error_details": task.skipped[i["source_path"]][1], "error_time": "2026-11-30T10:04:00+00:00",
                     "is_directory": False, "is_symlink": False}
                    for i in task.items if i["source_path"] in task.skipped]
        marker = int(parse_qs(parts.query).get("marker", ["0"])[0])
        page = rows[marker:marker + self.page_size]
        nxt = marker + self.page_size if marker + self.page_size < len(rows) else None
        return 200, {}, json.dumps({"DATA_TYPE": kind, "marker": marker, "next_marker": nxt, "DATA": page})

    def _events(self, request):
        blocked = self._guard("event_list", request)
        if blocked:
            return blocked
        task = self.tasks[urlsplit(request.url).path.split("/")[-2]]
        return 200, {}, json.dumps({"DATA_TYPE": "event_list", "DATA": task.events, "length": len(task.events),
                                    "limit": 1, "offset": 0, "total": len(task.events)})

    def _cancel(self, request):
        task_id = urlsplit(request.url).path.split("/")[-2]
        blocked = self._guard("cancel", request)
        if blocked:
            return blocked
        if task_id not in self.tasks:
            return 404, {}, json.dumps({"code": "ClientError.NotFound", "message": "Task not found",
                                        "request_id": "fake", "resource": f"/task/{task_id}/cancel"})
        self.canceled.append(task_id)
        self.finish(task_id, "FAILED", fatal_error={"code": "CANCELED", "description": "canceled"})
        return 200, {}, json.dumps({"DATA_TYPE": "result", "code": "Canceled", "message": "The task has been "
                                    "cancelled successfully.", "resource": f"/task/{task_id}/cancel",
                                    "request_id": "fake"})
