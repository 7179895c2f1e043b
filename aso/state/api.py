"""The REST API's handlers, and ``ROUTES``: which handler serves which subresource, for
which roles.

Each handler takes the request's :class:`~aso.state.params.Params` and the caller's
:class:`~aso.state.auth.Identity`, calls the store, and returns a JSON-able answer: reads a
table ``{"desc": {"columns": [...]}, "result": [[...], ...]}``, writes
``{"result": [{...}]}``. User-role calls are confined to the caller's rows here
(``Identity.owner_filter``); the role check itself is the app's (``aso.state.server``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aso import validate
from aso.errors import ValidationError
from aso.state.auth import Identity
from aso.state.namespaces import Namespaces
from aso.state.operations import (
    INSTANCE_COLUMNS,
    PASS_COLUMNS,
    SUBMITTED_JOB_COLUMNS,
    THROTTLE_COLUMNS,
)
from aso.state.params import Params, blank_to_none, parse_flag, parse_json_body
from aso.state.records import (
    DEFAULT_HEARTBEAT_TIMEOUT,
    TRANSFER_COLUMNS,
    Heartbeat,
    PassRecord,
    PublicationUpdate,
    TransferUpdate,
)
from aso.state.requests import request_type
from aso.state.schema import TASK_COLUMNS
from aso.state.store import Store
from aso.topology.throttle import ThrottleLimits

SERVICE = frozenset({"service"})
STAFF = frozenset({"service", "operator"})
ANYONE = frozenset({"service", "operator", "user"})


@dataclass
class ServerSettings:
    max_body_bytes: int = 16 * 1024 * 1024
    max_batch: int = 10000
    namespaces: Namespaces = field(default_factory=Namespaces)


def _limits(value: Any) -> ThrottleLimits | None:
    """``limits`` of acquireTransfers: an object in a JSON body, or its JSON text in a form."""
    if value in (None, ""):
        return None
    if isinstance(value, str):
        value = parse_json_body(value.encode("utf-8"), "limits")
    return ThrottleLimits.from_json(value, "limits")


def _table(columns: list[str], rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"desc": {"columns": columns}, "result": [[r.get(c) for c in columns] for r in rows]}


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

    @staticmethod
    def _generation(p: Params) -> int | None:
        """The fencing generation a pipeline write carries (absent: not checked)."""
        value = p.integer("generation")
        return None if value is None else validate.non_negative_int(value, "generation", validate.MAX_INT32)

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
            return blank_to_none(values[i]) if values is not None else None

        return ids, at

    # filetransfers: the pipeline
    def acquire_transfers(self, p: Params, who: Identity) -> Any:
        worker = self._worker(p)
        kind = request_type(p.get("request_type"))
        users = p.getlist("username")
        if not users:
            users = p.getlist("users") or users
        pinned = p.getlist("pinned_only")
        if users is None or (not users and pinned is None):
            # CRAB's call names no users: every active one (an empty list with pinned_only
            # means none of this worker's share, only pinned rows of the others)
            users = self.store.active_users(worker=worker, request_type=kind)
        limit = p.integer("limit", 1000)
        limits = _limits(p.get("limits"))
        if pinned is not None:
            self._batch("pinned_only", pinned)
        acquired = self.store.acquire_transfers(users, limit, worker=worker, limits=limits, request_type=kind,
                                                pinned_only=pinned, generation=self._generation(p))
        return {"result": [{"modified": int(acquired), "held": acquired.held}]}

    def throttle_counts(self, p: Params, who: Identity) -> Any:
        counts = self.store.throttle_counts()
        rows = [{"username": g[0], "source": g[1], "destination": g[2], "in_flight": counts.inflight.get(g, 0),
                 "waiting": counts.waiting.get(g, 0)} for g in sorted(counts.inflight.keys() | counts.waiting.keys())]
        return _table(THROTTLE_COLUMNS, rows)

    def record_pass(self, p: Params, who: Identity) -> Any:
        self.store.record_pass(PassRecord.from_params(p.get))
        return {"result": [{"recorded": 1}]}

    def component_passes(self, p: Params, who: Identity) -> Any:
        rows = []
        for r in self.store.component_passes():
            row = r.to_params()
            row["last_success_ms"] = None if r.last_success is None else int(r.last_success * 1000)
            rows.append(row)
        return _table(PASS_COLUMNS, rows)

    # several hosts
    def heartbeat(self, p: Params, who: Identity) -> Any:
        worker = self._worker(p)
        return {"result": [self.store.heartbeat(Heartbeat.from_params(p.get), worker=worker).as_dict()]}

    def instances(self, p: Params, who: Identity) -> Any:
        timeout = p.integer("timeout", DEFAULT_HEARTBEAT_TIMEOUT)
        return _table(INSTANCE_COLUMNS, [i.to_row() for i in self.store.instances(timeout)])

    def set_submission_ids(self, p: Params, who: Identity) -> Any:
        worker = self._worker(p)
        ids, at = self._aligned(p, "list_of_sid", [])
        sids: dict[str, str] = {}
        for i, row_id in enumerate(ids):
            sid = at("list_of_sid", i)
            if sid is None:
                raise ValidationError(f"list_of_sid[{i}]", "is required")
            if not isinstance(row_id, str) or row_id in sids:
                raise ValidationError(f"list_of_ids[{i}]", f"{str(row_id)[:60]!r} appears twice or is not an id")
            sids[row_id] = sid
        return {"result": [{"modified": self.store.set_submission_ids(sids, worker=worker,
                                                                      generation=self._generation(p))}]}

    def submitted_jobs(self, p: Params, who: Identity) -> Any:
        jobs = self.store.submitted_jobs(worker=self._worker(p), request_type=request_type(p.get("request_type")))
        return _table(SUBMITTED_JOB_COLUMNS, [dict(zip(SUBMITTED_JOB_COLUMNS, j, strict=True)) for j in jobs])

    def transfers_of_jobs(self, p: Params, who: Identity) -> Any:
        worker = self._worker(p)
        ids = self._batch("list_of_fts_id", p.getlist("list_of_fts_id"))
        return _table(TRANSFER_COLUMNS, self.store.transfers_of_jobs(ids, worker=worker))

    def acquired_transfers(self, p: Params, who: Identity) -> Any:
        worker = self._worker(p)
        rows = self.store.acquired_transfers(p.get("username"), p.integer("limit", 1000), worker=worker,
                                             request_type=request_type(p.get("request_type")))
        return _table(TRANSFER_COLUMNS, rows)

    def active_users(self, p: Params, who: Identity) -> Any:
        users = self.store.active_users(worker=self._worker(p), request_type=request_type(p.get("request_type")))
        return _table(["username"], [{"username": u} for u in users])

    def update_transfers(self, p: Params, who: Identity) -> Any:
        worker = self._worker(p)
        ids, at = self._aligned(p, "list_of_transfer_state", [
            "list_of_failure_reason", "list_of_retry_value", "list_of_fts_instance",
            "list_of_fts_id", "list_of_expected_state", "list_of_expected_fts_id", "list_of_path",
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
                path=at("list_of_path", i),
            )
            for i, row_id in enumerate(ids)
        ]
        result = self.store.update_transfers(updates, worker=worker, generation=self._generation(p))
        return {"result": [{"modified": len(result.updated), "updated": result.updated, "skipped": result.skipped}]}

    def retry_transfers(self, p: Params, who: Identity) -> Any:
        modified = self.store.retry_transfers(p.integer("time_to", required=True), worker=self._worker(p),
                                              generation=self._generation(p))
        return {"result": [{"modified": modified}]}

    def stuck_transfers(self, p: Params, who: Identity) -> Any:
        states = p.getlist("state") or ["ACQUIRED", "SUBMITTED"]
        rows = self.store.stuck_transfers(
            states, p.integer("older_than", required=True), p.integer("limit", 10000), worker=self._worker(p)
        )
        return _table(TRANSFER_COLUMNS, rows)

    def release_transfers(self, p: Params, who: Identity) -> Any:
        ids = self._batch("list_of_ids", p.getlist("list_of_ids"))
        return {"result": [{"modified": self.store.release_transfers(ids, worker=self._worker(p),
                                                                     generation=self._generation(p))}]}

    def transfers_to_kill(self, p: Params, who: Identity) -> Any:
        limit = min(p.integer("limit", 5000), 5000)
        return _table(TRANSFER_COLUMNS, self.store.transfers_to_kill(limit))

    def mark_killed(self, p: Params, who: Identity) -> Any:
        ids = self._batch("list_of_ids", p.getlist("list_of_ids"))
        return {"result": [{"modified": self.store.mark_killed(ids, blank_to_none(p.get("reason")))}]}

    # kills and retries (operators, and users on their own rows)
    def _task_or_ids(self, p: Params, ids_key: str) -> tuple[str | None, list[str] | None]:
        task = blank_to_none(p.get("taskname") or p.get("workflow"))
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
        return {"result": [{"modified": self.store.acquire_publication(worker=self._worker(p),
                                                                       generation=self._generation(p))}]}

    def acquired_publication(self, p: Params, who: Identity) -> Any:
        rows = self.store.acquired_publication(p.get("username"), p.integer("limit", 100000), worker=self._worker(p),
                                               after_user=p.get("after_username"))
        return _table(TRANSFER_COLUMNS, rows)

    def update_publication(self, p: Params, who: Identity) -> Any:
        worker = self._worker(p)
        ids, at = self._aligned(p, "list_of_publication_state", [
            "list_of_failure_reason", "list_of_retry_value", "list_of_block_name", "list_of_publish_flag",
        ])
        flag = parse_flag(blank_to_none(p.get("publish_flag")), "publish_flag")
        updates = []
        for i, row_id in enumerate(ids):
            publish = parse_flag(at("list_of_publish_flag", i), f"list_of_publish_flag[{i}]")
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
        result = self.store.update_publication(updates, worker=worker, generation=self._generation(p))
        return {"result": [{"modified": len(result.updated), "updated": result.updated, "skipped": result.skipped}]}

    # reads
    def statistics(self, p: Params, who: Identity) -> Any:
        rows = self.store.statistics(user=p.get("username"), task=p.get("taskname"), owner=who.owner_filter,
                                     request_type=request_type(p.get("request_type")))
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
            user=blank_to_none(p.get("username")),
            task=blank_to_none(p.get("taskname")),
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
    ("filetransfers", "GET", "throttleCounts"): ("throttle_counts", STAFF),
    ("filetransfers", "POST", "recordPass"): ("record_pass", SERVICE),
    ("filetransfers", "GET", "componentPasses"): ("component_passes", STAFF),
    ("filetransfers", "POST", "heartbeat"): ("heartbeat", SERVICE),
    ("filetransfers", "GET", "instances"): ("instances", STAFF),
    ("filetransfers", "POST", "setSubmissionIds"): ("set_submission_ids", SERVICE),
    ("filetransfers", "GET", "submittedJobs"): ("submitted_jobs", SERVICE),
    ("filetransfers", "POST", "transfersOfJobs"): ("transfers_of_jobs", SERVICE),
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
