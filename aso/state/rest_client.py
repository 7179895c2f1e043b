"""The StateBackend over HTTP: an ``aso server`` (or any server speaking its dialect).

One pooled session; each call is one request per batch (batches split by count and by
bytes; id and LFN lists travel in request bodies, never in URLs). Connection errors and 5xx answers are retried
with exponential back-off; 4xx answers never are, and come back as the matching
``aso.errors`` exception with the server's message.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from aso import validate
from aso.errors import (
    AsoError,
    AuthenticationError,
    BackendUnavailable,
    FencedError,
    ForbiddenError,
    NotFoundError,
    TransitionError,
    ValidationError,
)
from aso.state.backend import StateBackend
from aso.state.records import (
    Acquired,
    Heartbeat,
    InjectResult,
    Instance,
    KillResult,
    Membership,
    PassRecord,
    PublicationUpdate,
    TransferUpdate,
    UpdateResult,
)
from aso.state.requests import request_type as _request_type
from aso.state.requests import transfer_row
from aso.state.states import PublicationState, TransferState
from aso.topology.throttle import ThrottleCounts, ThrottleLimits

log = logging.getLogger("aso.state.rest")

#: bytes of JSON per request body: far below the server's default 16 MiB limit, so a
#: batch of long LFNs is split by size rather than refused with 413
BODY_BUDGET = 4 * 2**20


def _name(state: Any) -> str | None:
    if state is None:
        return None
    return state.name if isinstance(state, (TransferState, PublicationState)) else str(state)


def _task_or_ids(task: str | None, ids: list[str] | None) -> dict[str, Any]:
    """Send what was given; the server says which is missing or too much."""
    body: dict[str, Any] = {}
    if task is not None:
        body["taskname"] = task
    if ids is not None:
        body["list_of_ids"] = list(ids)
    return body


def _after_partial_inject(exc: AsoError, offset: int) -> AsoError:
    """The error of a batch starting at request ``offset``, in the caller's numbering."""
    written = (f"; requests [0] to [{offset - 1}] were written, none from [{offset}] on "
               "(injecting the same list again is safe)") if offset else "; nothing was written"
    if isinstance(exc, ValidationError):
        field = exc.field
        if field.startswith("["):
            index, _, rest = field[1:].partition("]")
            if index.isdigit():
                field = f"[{int(index) + offset}]{rest}"
        return ValidationError(field, exc.problem + written)
    if type(exc) in (BackendUnavailable, ForbiddenError, AuthenticationError, NotFoundError):
        return type(exc)(str(exc) + written)
    return exc


def _rows(answer: dict[str, Any]) -> list[dict[str, Any]]:
    columns = answer["desc"]["columns"]
    return [dict(zip(columns, values, strict=True)) for values in answer["result"]]


class RestBackend(StateBackend):
    def __init__(
        self,
        url: str,
        *,
        worker: str,
        token: str = "",
        instance: str = "prod",
        timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 0.5,
        ca_bundle: str = "",
        max_batch: int = 10000,
    ):
        self.worker = validate.worker(worker)
        self.base = url.rstrip("/")
        self.prefix = f"{self.base}/crabserver/{instance}"
        self.timeout = timeout
        self.retries = max(1, retries)
        self.backoff = backoff
        self.max_batch = max_batch
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["Accept"] = "application/json"
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        if ca_bundle:
            self.session.verify = ca_bundle

    # -- transport -----------------------------------------------------------------------
    def _call(self, method: str, resource: str, *, params: dict | None = None, body: Any = None) -> dict[str, Any]:
        url = f"{self.prefix}/{resource}"
        delay = self.backoff
        last: str = ""
        for attempt in range(1, self.retries + 1):
            try:
                response = self.session.request(method, url, params=params, json=body, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                last = f"{exc.__class__.__name__}: {exc}"
            else:
                if response.status_code < 400:
                    return response.json()
                if response.status_code < 500:
                    raise self._error(response)
                last = f"HTTP {response.status_code}: {response.text[:300]}"
            if attempt < self.retries:
                log.warning("state server %s: %s; retrying in %.1fs (%d/%d)", self.base, last, delay, attempt, self.retries)
                time.sleep(delay)
                delay *= 2
        raise BackendUnavailable(f"state server {self.base} unreachable after {self.retries} attempts: {last}")

    @staticmethod
    def _error(response: requests.Response) -> AsoError:
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text[:500]}
        message = body.get("error", response.reason)
        status = response.status_code
        if status == 400 and body.get("field"):
            return ValidationError(body["field"], body.get("problem", message))
        if status == 409 and body.get("fenced"):
            return FencedError(str(body.get("worker", "?")), int(body.get("generation", -1)),
                               int(body.get("current", -1)))
        if status == 409 and body.get("row"):
            return TransitionError(body["row"], body.get("current", "?"), body.get("requested", "?"), body.get("kind", "transfer"))
        if status == 401:
            return AuthenticationError(message)
        if status == 403:
            return ForbiddenError(message)
        if status == 404:
            return NotFoundError(message)
        if status == 413:
            return ValidationError("body", message)
        error = AsoError(f"HTTP {status}: {message}")
        error.http_status = status
        return error

    def _get_rows(self, resource: str, subresource: str, **params: Any) -> list[dict[str, Any]]:
        params = {k: v for k, v in params.items() if v is not None}
        return _rows(self._call("GET", resource, params={"subresource": subresource, **params}))

    def _post(self, resource: str, subresource: str, **body: Any) -> dict[str, Any]:
        answer = self._call("POST", resource, body={"subresource": subresource, **body})
        return answer["result"][0]

    def _batches(self, items: list) -> list[list]:
        return [items[i : i + self.max_batch] for i in range(0, len(items), self.max_batch)] or [[]]

    def _sized_batches(self, items: list) -> list[tuple[int, list]]:
        """(offset, batch): at most max_batch items and about BODY_BUDGET bytes each."""
        out: list[tuple[int, list]] = []
        start, size = 0, 0
        for i, item in enumerate(items):
            n = len(json.dumps(item)) + 2
            if i > start and (i - start >= self.max_batch or size + n > BODY_BUDGET):
                out.append((start, items[start:i]))
                start, size = i, 0
            size += n
        if start < len(items):
            out.append((start, items[start:]))
        return out

    def _fenced(self) -> dict[str, Any]:
        """The generation a pipeline write carries (nothing before a heartbeat)."""
        return {} if self.generation is None else {"generation": self.generation}

    # -- injection and reads -------------------------------------------------------------
    def inject(self, requests_: list[dict[str, Any]]) -> InjectResult:
        """Every request is checked here first, so bad input changes nothing; the rows then
        go in batches by count and size. If the server refuses or fails a later batch, the
        error says which rows were written: injecting the same list again is safe (rows
        already recorded are skipped)."""
        requests_ = list(requests_)
        now = int(time.time())
        seen: dict[str, int] = {}
        for i, req in enumerate(requests_):
            row_id = transfer_row(i, req, now)["tm_id"]
            if row_id in seen:
                raise ValidationError(f"[{i}].source_lfn", f"same file as request [{seen[row_id]}]")
            seen[row_id] = i
        result = InjectResult()
        for offset, batch in self._sized_batches(requests_):
            try:
                answer = self._call("PUT", "fileusertransfers", body={"transfers": batch})["result"][0]
            except AsoError as exc:
                raise _after_partial_inject(exc, offset) from exc
            result.inserted += answer["inserted"]
            result.reinitialised += answer["reinitialised"]
            result.skipped += answer["skipped"]
        return result

    def _post_rows(self, resource: str, subresource: str, **body: Any) -> list[dict[str, Any]]:
        return _rows(self._call("POST", resource, body={"subresource": subresource, **body}))

    def get_transfers(self, ids: list[str]) -> list[dict[str, Any]]:
        # Ids travel in the body: a query string of 150 ids was already past gunicorn's
        # default request-line limit (4 KiB).
        rows: list[dict[str, Any]] = []
        for batch in self._batches(list(ids)):
            if batch:
                rows += self._post_rows("filetransfers", "getById", list_of_ids=batch)
        return rows

    def list_transfers(self, *, user=None, task=None, states=None, limit: int = 10000) -> list[dict[str, Any]]:
        return self._get_rows(
            "filetransfers", "listTransfers", username=user, taskname=task,
            state=[_name(s) for s in states] if states else None, limit=limit,
        )

    def statistics(self, *, user=None, task=None, request_type: str | None = None) -> list[dict[str, Any]]:
        return self._get_rows("filetransfers", "groupedTransferStatistics", username=user, taskname=task,
                              request_type=_request_type(request_type))

    # -- pipeline ------------------------------------------------------------------------
    def active_users(self, *, request_type: str | None = None) -> list[str]:
        return [r["username"] for r in self._get_rows("filetransfers", "activeUsers", asoworker=self.worker,
                                                      request_type=_request_type(request_type))]

    def acquire_transfers(self, users: list[str], limit: int, limits: ThrottleLimits | None = None, *,
                          request_type: str | None = None, pinned_only: list[str] | None = None) -> int:
        if not users and not pinned_only:
            return 0
        body: dict[str, Any] = {"asoworker": self.worker, "username": list(users), "limit": limit, **self._fenced()}
        if pinned_only:
            body["pinned_only"] = list(pinned_only)
        if _request_type(request_type) is not None:
            body["request_type"] = request_type
        if limits is not None and not limits.is_empty():
            body["limits"] = limits.to_json()
        answer = self._post("filetransfers", "acquireTransfers", **body)
        return Acquired(answer["modified"], answer.get("held", 0))

    def throttle_counts(self) -> ThrottleCounts:
        counts = ThrottleCounts()
        for row in self._get_rows("filetransfers", "throttleCounts"):
            group = (row["username"], row["source"], row["destination"])
            if row["in_flight"]:
                counts.inflight[group] = row["in_flight"]
            if row["waiting"]:
                counts.waiting[group] = row["waiting"]
        return counts

    def acquired_transfers(self, user=None, limit: int = 10000, *, request_type: str | None = None) -> list[dict[str, Any]]:
        return self._get_rows("filetransfers", "acquiredTransfers", asoworker=self.worker, username=user, limit=limit,
                              request_type=_request_type(request_type))

    def update_transfers(self, updates: list[TransferUpdate]) -> UpdateResult:
        result = UpdateResult()
        for batch in self._batches(list(updates)):
            if not batch:
                continue
            answer = self._post(
                "filetransfers", "updateTransfers",
                asoworker=self.worker, **self._fenced(),
                list_of_ids=[u.id for u in batch],
                list_of_transfer_state=[_name(u.state) for u in batch],
                list_of_failure_reason=[u.reason for u in batch],
                list_of_retry_value=[u.retry_increment for u in batch],
                list_of_fts_id=[u.fts_id for u in batch],
                list_of_fts_instance=[u.fts_instance for u in batch],
                list_of_expected_state=[_name(u.expect_state) for u in batch],
                list_of_expected_fts_id=[u.expect_fts_id for u in batch],
                **({"list_of_path": [u.path for u in batch]} if any(u.path for u in batch) else {}),
            )
            result.updated += answer["updated"]
            result.skipped += answer["skipped"]
        return result

    def retry_transfers(self, cooloff: int) -> int:
        return self._post("filetransfers", "retryTransfers", asoworker=self.worker, time_to=cooloff,
                          **self._fenced())["modified"]

    def stuck_transfers(self, states, older_than: int, limit: int = 10000) -> list[dict[str, Any]]:
        return self._get_rows(
            "filetransfers", "stuckTransfers", asoworker=self.worker,
            state=[_name(s) for s in states], older_than=older_than, limit=limit,
        )

    def release_transfers(self, ids: list[str]) -> int:
        return sum(
            self._post("filetransfers", "releaseTransfers", asoworker=self.worker, list_of_ids=b,
                       **self._fenced())["modified"]
            for b in self._batches(list(ids)) if b
        )

    def request_kill(self, *, task=None, ids=None) -> KillResult:
        body = _task_or_ids(task, ids)
        answer = self._post("filetransfers", "killTransfers", **body)
        return KillResult(killed=answer["killed"], failed_kill=answer["failedKill"])

    def transfers_to_kill(self, limit: int = 5000) -> list[dict[str, Any]]:
        return self._get_rows("filetransfers", "getTransfersToKill", limit=limit)

    def mark_killed(self, ids: list[str], reason: str | None = None) -> int:
        return sum(
            self._post("filetransfers", "markKilled", list_of_ids=b, reason=reason)["modified"]
            for b in self._batches(list(ids)) if b
        )

    def retry_failed(self, *, task=None, ids=None) -> int:
        body = _task_or_ids(task, ids)
        return self._post("filetransfers", "retryFailed", **body)["modified"]

    # -- publication ---------------------------------------------------------------------
    def acquire_publication(self) -> int:
        return self._post("filetransfers", "acquirePublication", asoworker=self.worker, **self._fenced())["modified"]

    def acquired_publication(self, user=None, limit: int = 100000, *, after_user=None) -> list[dict[str, Any]]:
        return self._get_rows("filetransfers", "acquiredPublication", asoworker=self.worker, username=user, limit=limit,
                              after_username=after_user)

    def update_publication(self, updates: list[PublicationUpdate]) -> UpdateResult:
        result = UpdateResult()
        for batch in self._batches(list(updates)):
            if not batch:
                continue
            answer = self._post(
                "filetransfers", "updatePublication",
                asoworker=self.worker, **self._fenced(),
                list_of_ids=[u.id for u in batch],
                list_of_publication_state=[_name(u.state) for u in batch],
                list_of_failure_reason=[u.reason for u in batch],
                list_of_retry_value=[u.retry_increment for u in batch],
                list_of_block_name=[u.block_name for u in batch],
                list_of_publish_flag=[u.publish_flag for u in batch],
            )
            result.updated += answer["updated"]
            result.skipped += answer["skipped"]
        return result

    def retry_publication(self, *, task=None, ids=None) -> int:
        body = _task_or_ids(task, ids)
        return self._post("filetransfers", "retryPublication", **body)["modified"]

    # -- tasks and metadata --------------------------------------------------------------
    def get_task(self, task: str) -> dict[str, Any] | None:
        rows = self._get_rows("task", "search", workflow=task)
        return rows[0] if rows else None

    def upsert_tasks(self, tasks: list[dict[str, Any]]) -> int:
        return self._call("PUT", "task", body={"tasks": list(tasks)})["result"][0]["modified"]

    def update_last_publication(self, task: str, when: int | None = None) -> None:
        self._post("task", "updatepublicationtime", workflow=task, publicationtime=when)

    def put_file_metadata(self, entries: list[dict[str, Any]]) -> int:
        return sum(
            self._call("PUT", "filemetadata", body={"entries": b})["result"][0]["modified"]
            for b in self._batches(list(entries)) if b
        )

    def record_pass(self, record: PassRecord) -> None:
        self._post("filetransfers", "recordPass", **record.to_params())

    def component_passes(self) -> list[PassRecord]:
        out = []
        for row in self._get_rows("filetransfers", "componentPasses"):
            record = PassRecord.from_params(row.get)
            record.last_success = None if row.get("last_success_ms") is None else row["last_success_ms"] / 1000
            out.append(record)
        return out

    def _heartbeat(self, beat: Heartbeat) -> Membership:
        return Membership.from_dict(self._post("filetransfers", "heartbeat", asoworker=self.worker, **beat.to_params()))

    def instances(self, timeout: int) -> list[Instance]:
        return [Instance.from_row(row) for row in self._get_rows("filetransfers", "instances", timeout=timeout)]

    def set_submission_ids(self, sids: dict[str, str]) -> int:
        items = list(sids.items())
        return sum(
            self._post("filetransfers", "setSubmissionIds", asoworker=self.worker, list_of_ids=[i for i, _ in b],
                       list_of_sid=[sid for _, sid in b], **self._fenced())["modified"]
            for b in self._batches(items) if b
        )

    def submitted_jobs(self, *, request_type: str | None = None) -> list[tuple[str, str, str]]:
        rows = self._get_rows("filetransfers", "submittedJobs", asoworker=self.worker,
                              request_type=_request_type(request_type))
        return [(r["username"], r["fts_id"], r["fts_instance"]) for r in rows]

    def transfers_of_jobs(self, fts_ids: list[str]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for batch in self._batches(sorted(set(fts_ids))):
            if batch:
                rows += self._post_rows("filetransfers", "transfersOfJobs", asoworker=self.worker, list_of_fts_id=batch)
        return rows

    def get_file_metadata(self, lfns: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for _, batch in self._sized_batches(list(lfns)):
            for row in self._post_rows("filemetadata", "lookup", lfnList=batch):
                out[row["lfn"]] = row["metadata"]
        return out

    def close(self) -> None:
        self.session.close()
