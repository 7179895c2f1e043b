"""What each call of the state server's REST API takes and answers: the table the OpenAPI
document is built from (:mod:`aso.state.openapi` is the builder).

``PARAMETERS`` names every request parameter with its schema; ``OPERATIONS`` maps each
(resource, method, subresource) of :data:`aso.state.api.ROUTES` to its summary, its
parameters (required or not) and its answer. Value schemas (``USERNAME``, ``ROW_ID``, ...)
carry the same patterns as :mod:`aso.validate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aso import validate
from aso.state.records import (
    COMPONENTS,
    HOST_RE,
    MAX_EPOCH_MS,
    MAX_HEARTBEAT_TIMEOUT,
    MIN_HEARTBEAT_TIMEOUT,
    TRANSFER_COLUMNS,
)
from aso.state.schema import TASK_COLUMNS
from aso.state.states import PublicationState, TransferState

OPENAPI_VERSION = "3.0.3"
RESOURCES = ("filetransfers", "fileusertransfers", "task", "filemetadata")

# -- value schemas -------------------------------------------------------------------------
INT = {"type": "integer", "minimum": 0, "maximum": validate.MAX_INT}
FLAG = {"type": "integer", "enum": [0, 1]}
# Names with a pattern also carry a format of their own ("aso-..."), defined by the pattern:
# clients may key generators or validators on it (the test suite's fuzzing does).
USERNAME = {"type": "string", "format": "aso-username", "pattern": validate.USERNAME_RE.pattern, "minLength": 1, "maxLength": 64}
WORKER = {"type": "string", "format": "aso-worker", "pattern": validate.WORKER_RE.pattern, "minLength": 1, "maxLength": 100}
TASKNAME = {"type": "string", "format": "aso-taskname", "pattern": validate.TASKNAME_RE.pattern, "minLength": 1, "maxLength": 255}
SITE = {"type": "string", "format": "aso-site", "pattern": validate.SITE_RE.pattern, "minLength": 1, "maxLength": 100}
ROW_ID = {
    "type": "string",
    "format": "aso-transfer-id",
    "description": "sha224 hex digest of the source LFN",
    "pattern": validate.ROW_ID_RE.pattern,
    "minLength": 56,
    "maxLength": 56,
}
LFN = {
    "type": "string",
    "format": "aso-lfn",
    "pattern": f"^(/{validate.LFN_PART_RE.pattern})+$",
    "minLength": 2,
    "maxLength": validate.MAX_LFN,
}
#: the custom string formats used above, by name
FORMATS = {"aso-username": USERNAME, "aso-worker": WORKER, "aso-taskname": TASKNAME, "aso-site": SITE, "aso-transfer-id": ROW_ID, "aso-lfn": LFN}
ADLER32 = {"type": "string", "pattern": "^([Aa][Dd][Ll][Ee][Rr]32:)?[0-9A-Fa-f]{1,8}$"}
TRANSFER_STATE = {"type": "string", "enum": list(TransferState.__members__)}
PUBLICATION_STATE = {"type": "string", "enum": list(PublicationState.__members__)}
TEXT = {"type": "string", "maxLength": 1000}
SHORT_TEXT = {"type": "string", "maxLength": 255}


def _array(items: dict[str, Any], nullable_items: bool = False) -> dict[str, Any]:
    items = {**items, "nullable": True} if nullable_items else items
    return {"type": "array", "items": items}


TRANSFER_REQUEST = {
    "type": "object",
    "description": "One transfer to inject; the row id is sha224(source_lfn).",
    "required": ["username", "taskname", "source", "destination", "source_lfn", "destination_lfn", "filesize"],
    "properties": {
        "username": USERNAME,
        "taskname": TASKNAME,
        "source": SITE,
        "destination": SITE,
        "source_lfn": LFN,
        "destination_lfn": LFN,
        "filesize": INT,
        "checksum": {
            "anyOf": [ADLER32, {"type": "object", "properties": {"adler32": ADLER32}}],
            "description": "adler32 (an 'ADLER32:' prefix is allowed), or CRAB's {\"adler32\": ...}",
        },
        "publish": FLAG,
        "job_id": {"type": "string", "maxLength": 64},
        "job_retry_count": INT,
        "type": {"type": "string", "enum": ["output", "log", "stagein"],
                 "description": "stagein: bring the file online at a tape site in place (source = destination, "
                                "destination_lfn = source_lfn, publish 0)"},
        "start_time": INT,
        "transfer_state": {"type": "string", "enum": ["NEW", "DONE"]},
        "max_retry": INT,
        "asoworker": WORKER,
        "id": ROW_ID,
    },
}

TASK = {
    "type": "object",
    "required": ["tm_taskname", "tm_username"],
    "additionalProperties": False,
    "properties": {
        "tm_taskname": TASKNAME,
        "tm_username": USERNAME,
        "tm_task_status": {"type": "string", "maxLength": 50},
        "tm_last_publication": {**INT, "nullable": True},
        "tm_publish_name": {"type": "string", "maxLength": 500, "nullable": True},
        "tm_publish_dbs_url": {"type": "string", "maxLength": 500, "nullable": True},
        "tm_creation_time": {**INT, "nullable": True},
    },
}

METADATA_ENTRY = {
    "type": "object",
    "required": ["lfn", "taskname", "metadata"],
    "properties": {"lfn": LFN, "taskname": TASKNAME, "metadata": {"type": "object"}},
}

_MAX_FILES = {**INT, "description": "most files in flight (0 = no limit)"}
_SITE_LIMIT = {"type": "object", "required": ["site", "max_files"], "additionalProperties": False,
               "properties": {"site": SITE, "max_files": _MAX_FILES}}
THROTTLE_LIMITS = {
    "type": "object",
    "description": "limits on files in flight (ACQUIRED or SUBMITTED, every worker) for this acquisition",
    "additionalProperties": False,
    "properties": {
        "incoming": {"type": "array", "items": _SITE_LIMIT, "description": "per destination site"},
        "outgoing": {"type": "array", "items": _SITE_LIMIT, "description": "per source site"},
        "links": {"type": "array", "description": "per (source, destination) link", "items": {
            "type": "object", "required": ["source", "destination", "max_files"], "additionalProperties": False,
            "properties": {"source": SITE, "destination": SITE, "max_files": _MAX_FILES}}},
        "fair_share": {"type": "boolean", "description": "share a full site or link max-min fairly between users"},
    },
}

_PASS_NUMBER = {**INT, "maximum": MAX_EPOCH_MS}

#: every parameter any subresource takes: name -> (schema, description). Lists are lists
#: of the item schema; lists of objects can only be sent in a JSON body.
PARAMETERS: dict[str, tuple[dict[str, Any], str]] = {
    "asoworker": (WORKER, "the ASO worker acting (CRAB's asoworker)"),
    "username": (USERNAME, "a user name"),
    "after_username": (USERNAME, "only users that sort after this one (the next page of rows by user)"),
    "usernames": (_array(USERNAME), "user names (repeated key `username`)"),
    "users": (_array(USERNAME), "user names (CRAB's alternative key)"),
    "taskname": (TASKNAME, "a task name"),
    "workflow": (TASKNAME, "a task name (CRAB's key)"),
    "limit": (INT, "at most this many rows (per user for acquireTransfers)"),
    "host": ({"type": "string", "pattern": HOST_RE.pattern, "minLength": 1, "maxLength": 255},
             "the host a component instance runs on"),
    "component": ({"type": "string", "enum": list(COMPONENTS)}, "a component (its command's name)"),
    "pid": ({**INT, "maximum": validate.MAX_INT32}, "the component instance's process id"),
    "pass_id": ({"type": "string", "pattern": validate.PATH_PART_RE.pattern, "minLength": 1, "maxLength": 200},
                "the pass's id (the same in its start and end records, and in its log lines)"),
    "started_ms": (_PASS_NUMBER, "when the pass started (epoch milliseconds)"),
    "finished_ms": ({**_PASS_NUMBER, "nullable": True}, "when the pass ended (epoch milliseconds; absent while it runs)"),
    "exit_code": ({"type": "integer", "minimum": 0, "maximum": 255, "nullable": True},
                  "the pass's exit code (absent while it runs)"),
    "files": (_PASS_NUMBER, "files the pass handled"),
    "failures": (_PASS_NUMBER, "errors the pass met"),
    "summary": (TEXT, "the pass's summary line"),
    "timeout": ({"type": "integer", "minimum": MIN_HEARTBEAT_TIMEOUT, "maximum": MAX_HEARTBEAT_TIMEOUT},
                "heartbeat timeout (seconds): an instance silent for longer is dead"),
    "generation": ({**INT, "maximum": validate.MAX_INT32},
                   "fencing: the worker's generation from its last heartbeat; a write with another one is "
                   "refused (409, fenced); absent: not checked"),
    "pinned_only": (_array(USERNAME), "users of whom only rows pinned to asoworker are taken (other workers' shares)"),
    "list_of_sid": (_array({"type": "string", "pattern": validate.PATH_PART_RE.pattern, "minLength": 1,
                            "maxLength": 64}), "submission id (FTS sid) of each id's chunk"),
    "request_type": ({"type": "string", "enum": ["transfer", "stagein"]},
                     "only rows of this kind: 'transfer' (output and log rows, aso transfer's) or 'stagein' "
                     "(stage-in rows, aso stager's); absent: every row"),
    "limits": (THROTTLE_LIMITS, "throttling: take only what sites and links have room for (JSON only)"),
    "time_to": (INT, "seconds a RETRY row waits before going back to NEW"),
    "older_than": (INT, "seconds since the last update"),
    "publicationtime": (INT, "epoch seconds (default: now)"),
    "publish_flag": (FLAG, "tm_publish for every row of the call"),
    "reason": (TEXT, "the failure reason recorded"),
    "state": (_array(TRANSFER_STATE), "transfer states (repeated key)"),
    "id": (_array(ROW_ID), "transfer ids (repeated key)"),
    "list_of_ids": (_array(ROW_ID), "transfer ids (repeated key)"),
    "listOfIds": (_array(ROW_ID), "transfer ids (repeated key)"),
    "list_of_transfer_state": (_array(TRANSFER_STATE), "new transfer state of each id"),
    "list_of_publication_state": (_array(PUBLICATION_STATE), "new publication state of each id"),
    "list_of_failure_reason": (_array(TEXT, True), "failure reason of each id"),
    "list_of_retry_value": (_array(INT, True), "added to the retry count of each id"),
    "list_of_fts_instance": (_array(SHORT_TEXT, True), "FTS endpoint of each id"),
    "list_of_fts_id": (_array(SHORT_TEXT, True), "FTS job id of each id"),
    "list_of_expected_state": (_array(TRANSFER_STATE, True), "guard: skip the id unless it is in this state"),
    "list_of_expected_fts_id": (_array(SHORT_TEXT, True), "guard: skip the id unless it has this FTS job id"),
    "list_of_path": (_array(SHORT_TEXT, True), "sites of each id's multi-hop path (A>B>C)"),
    "list_of_block_name": (_array(TEXT, True), "DBS block of each id"),
    "list_of_publish_flag": (_array(FLAG, True), "tm_publish of each id"),
    "lfnList": (_array(LFN), "LFNs (repeated key)"),
    "transfers": (_array(TRANSFER_REQUEST), "transfers to inject (JSON only)"),
    "tasks": (_array(TASK), "tasks to create or update (JSON only)"),
    "entries": (_array(METADATA_ENTRY), "metadata entries (JSON only)"),
    "metadata_transfers": (_array(METADATA_ENTRY), "metadata entries, under the key `transfers` (JSON only)"),
    # the fields of one transfer, for an injection of a single transfer as the body itself
    **{
        f"transfer.{name}": (schema, "a field of the one transfer the body is")
        for name, schema in TRANSFER_REQUEST["properties"].items()
    },
}

#: parameter table names that are sent under another key
WIRE_NAMES = {"usernames": "username", "metadata_transfers": "transfers"}

TRANSFER_FIELDS = [f"transfer.{name}" for name in TRANSFER_REQUEST["properties"]]
REQUIRED_TRANSFER_FIELDS = [f"transfer.{name}" for name in TRANSFER_REQUEST["required"]]


def wire_name(name: str) -> str:
    """The key a parameter of :data:`PARAMETERS` is sent under."""
    return WIRE_NAMES.get(name, name.removeprefix("transfer."))


# -- answers -------------------------------------------------------------------------------
SKIPPED = {
    "type": "object",
    "required": ["id", "state", "reason"],
    "properties": {"id": {"type": "string"}, "state": {"type": "string", "nullable": True}, "reason": {"type": "string"}},
}
RECORDED = {"type": "object", "required": ["recorded"], "properties": {"recorded": {"type": "integer", "minimum": 0}}}
MODIFIED = {"type": "object", "required": ["modified"], "properties": {"modified": {"type": "integer", "minimum": 0}}}
ACQUIRED = {
    "type": "object",
    "required": ["modified", "held"],
    "properties": {
        "modified": {"type": "integer", "minimum": 0},
        "held": {"type": "integer", "minimum": 0, "description": "NEW rows left waiting on a full site or link"},
    },
}
THROTTLE_COLUMNS = ["username", "source", "destination", "in_flight", "waiting"]
PASS_COLUMNS = ["host", "component", "pid", "pass_id", "started_ms", "finished_ms", "exit_code", "files", "failures",
                "summary", "last_success_ms"]
INSTANCE_COLUMNS = ["worker", "host", "component", "pid", "started_ms", "heartbeat_ms", "live", "generation", "state",
                    "taken_over_ms", "taken_over_by"]
SUBMITTED_JOB_COLUMNS = ["username", "fts_id", "fts_instance"]
_TAKEN_OVER = {
    "type": "object",
    "required": ["worker", "by", "generation", "rows", "users"],
    "properties": {"worker": {"type": "string"}, "by": {"type": "string"},
                   "generation": {"type": "integer", "minimum": 0}, "rows": {"type": "integer", "minimum": 0},
                   "users": {"type": "integer", "minimum": 0}},
}
MEMBERSHIP = {
    "type": "object",
    "required": ["worker", "generation", "live", "taken_over"],
    "properties": {
        "worker": {"type": "string"},
        "generation": {"type": "integer", "minimum": 0, "description": "the fencing token of asoworker's writes"},
        "live": {"type": "array", "items": {"type": "string"}, "description": "live workers of the component"},
        "taken_over": {"type": "array", "items": _TAKEN_OVER, "description": "workers this call took over"},
    },
}
UPDATED = {
    "type": "object",
    "required": ["modified", "updated", "skipped"],
    "properties": {
        "modified": {"type": "integer", "minimum": 0},
        "updated": {"type": "array", "items": {"type": "string"}},
        "skipped": {"type": "array", "items": SKIPPED},
    },
}
KILLED = {
    "type": "object",
    "required": ["killed", "failedKill"],
    "properties": {"killed": {"type": "array", "items": {"type": "string"}}, "failedKill": {"type": "array", "items": SKIPPED}},
}
INJECTED = {
    "type": "object",
    "required": ["inserted", "reinitialised", "skipped"],
    "properties": {
        "inserted": {"type": "array", "items": {"type": "string"}},
        "reinitialised": {"type": "array", "items": {"type": "string"}},
        "skipped": {"type": "array", "items": SKIPPED},
    },
}
STATISTICS_COLUMNS = ["username", "taskname", "transfer_state", "publication_state", "count"]
PUBLISH_STATISTICS_COLUMNS = ["username", "taskname", "publication_state", "count"]
TRANSFER_STATUS_COLUMNS = [
    "tm_id", "tm_jobid", "tm_transfer_state", "tm_start_time", "tm_last_update", "tm_fts_id",
    "tm_fts_instance", "tm_aso_worker", "tm_transfer_failure_reason",
]
PUBLICATION_STATUS_COLUMNS = ["tm_id", "tm_jobid", "tm_publication_state", "tm_publication_failure_reason", "tm_dbs_blockname"]


@dataclass(frozen=True)
class Answer:
    """A 200 answer: a table with ``columns`` or a write result whose one item is ``item``."""

    columns: tuple[str, ...] | None = None
    item: dict[str, Any] | None = None

    def schema(self) -> dict[str, Any]:
        if self.columns is not None:
            n = len(self.columns)
            return {
                "type": "object",
                "description": "a table: one array per row, values in the order of desc.columns",
                "required": ["desc", "result"],
                "properties": {
                    "desc": {
                        "type": "object",
                        "required": ["columns"],
                        "properties": {"columns": {"type": "array", "items": {"type": "string"}, "enum": [list(self.columns)]}},
                    },
                    "result": {"type": "array", "items": {"type": "array", "minItems": n, "maxItems": n}},
                },
            }
        return {
            "type": "object",
            "description": "a write: what happened, as the one item of result",
            "required": ["result"],
            "properties": {"result": {"type": "array", "minItems": 1, "maxItems": 1, "items": self.item}},
        }


def table(columns: list[str]) -> Answer:
    return Answer(columns=tuple(str(c) for c in columns))


def write(item: dict[str, Any]) -> Answer:
    return Answer(item=item)


@dataclass(frozen=True)
class Operation:
    """One subresource: its parameters (name -> required) and its 200 answer."""

    summary: str
    params: dict[str, bool]
    answer: Answer
    #: "query" for GET, "body" (JSON and form) for POST and PUT
    where: str = "body"
    #: for PUT: the body may also be a JSON list (of ``list_item``)
    list_body: str | None = None
    json_only: bool = False
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _q(summary: str, params: dict[str, bool], answer: Answer, notes: str = "") -> Operation:
    return Operation(summary, params, answer, where="query", notes=notes)


_TASK_OR_IDS = {"taskname": False, "workflow": False, "list_of_ids": False}
_TASK_OR_IDS_NOTE = "give exactly one of taskname (or workflow) and list_of_ids"
_INJECT_PARAMS = {"transfers": False, **{name: name in REQUIRED_TRANSFER_FIELDS for name in TRANSFER_FIELDS}}
_INJECT_NOTE = (
    "one transfer as the body's own fields (form or JSON), or a JSON list of transfers "
    "(as the whole body or under `transfers`); the transfer fields are required unless "
    "`transfers` is given"
)

#: (resource, method, subresource) -> its parameters and answer; the roles come from ROUTES.
OPERATIONS: dict[tuple[str, str, str], Operation] = {
    # filetransfers: the pipeline (service)
    ("filetransfers", "POST", "acquireTransfers"): Operation(
        "NEW rows with no worker become ACQUIRED by asoworker, oldest first, limit per user",
        {"asoworker": True, "usernames": False, "users": False, "limit": False, "limits": False,
         "request_type": False, "pinned_only": False, "generation": False}, write(ACQUIRED),
        notes="with limits, only what the sites and links have room for"),
    ("filetransfers", "POST", "updateTransfers"): Operation(
        "change the transfer state of rows of the worker",
        {"asoworker": True, "list_of_ids": True, "list_of_transfer_state": True, "list_of_failure_reason": False,
         "list_of_retry_value": False, "list_of_fts_instance": False, "list_of_fts_id": False,
         "list_of_expected_state": False, "list_of_expected_fts_id": False, "list_of_path": False,
         "generation": False},
        write(UPDATED), notes="the list_of_* lists are aligned with list_of_ids; rows another worker owns are "
                              "skipped (reason 'owned by ...')"),
    ("filetransfers", "POST", "retryTransfers"): Operation(
        "RETRY rows of the worker older than time_to go back to NEW",
        {"asoworker": True, "time_to": True, "generation": False}, write(MODIFIED)),
    ("filetransfers", "POST", "releaseTransfers"): Operation(
        "ACQUIRED rows of the worker back to NEW", {"asoworker": True, "list_of_ids": True, "generation": False},
        write(MODIFIED)),
    ("filetransfers", "POST", "markKilled"): Operation(
        "KILL rows become KILLED", {"list_of_ids": True, "reason": False}, write(MODIFIED)),
    ("filetransfers", "POST", "acquirePublication"): Operation(
        "publication NEW or RETRY becomes ACQUIRED for the worker's DONE rows",
        {"asoworker": True, "generation": False}, write(MODIFIED)),
    ("filetransfers", "POST", "updatePublication"): Operation(
        "change the publication state of rows of the worker",
        {"asoworker": True, "list_of_ids": True, "list_of_publication_state": True, "list_of_failure_reason": False,
         "list_of_retry_value": False, "list_of_block_name": False, "list_of_publish_flag": False,
         "publish_flag": False, "generation": False},
        write(UPDATED), notes="the list_of_* lists are aligned with list_of_ids"),
    ("filetransfers", "POST", "killTransfers"): Operation(
        "rows in flight go to KILL", _TASK_OR_IDS, write(KILLED), notes=_TASK_OR_IDS_NOTE),
    ("filetransfers", "POST", "retryFailed"): Operation(
        "FAILED and KILLED rows back to NEW", _TASK_OR_IDS, write(MODIFIED), notes=_TASK_OR_IDS_NOTE),
    ("filetransfers", "POST", "retryPublication"): Operation(
        "publication FAILED back to NEW", _TASK_OR_IDS, write(MODIFIED), notes=_TASK_OR_IDS_NOTE),
    ("filetransfers", "GET", "acquiredTransfers"): _q(
        "ACQUIRED rows of the worker", {"asoworker": True, "username": False, "limit": False, "request_type": False},
        table(TRANSFER_COLUMNS)),
    ("filetransfers", "GET", "acquiredPublication"): _q(
        "publication ACQUIRED rows of the worker, by user, task and end time",
        {"asoworker": True, "username": False, "limit": False, "after_username": False}, table(TRANSFER_COLUMNS),
        notes="after_username: only users that sort after it (a pass reading its rows page by page)"),
    ("filetransfers", "GET", "activeUsers"): _q(
        "users with unowned NEW rows or ACQUIRED rows of the worker", {"asoworker": True, "request_type": False},
        table(["username"])),
    ("filetransfers", "GET", "stuckTransfers"): _q(
        "rows of the worker in `state` not updated for older_than seconds",
        {"asoworker": True, "state": False, "older_than": True, "limit": False}, table(TRANSFER_COLUMNS)),
    ("filetransfers", "POST", "recordPass"): Operation(
        "a component instance's pass starting (no finished_ms) or ending: its latest pass, one per host and component",
        {"host": True, "component": True, "pid": True, "pass_id": True, "started_ms": True, "finished_ms": False,
         "exit_code": False, "files": True, "failures": True, "summary": False}, write(RECORDED)),
    ("filetransfers", "GET", "componentPasses"): _q(
        "every component instance's latest pass (last_success_ms: its last pass that ended with exit code 0)", {},
        table(PASS_COLUMNS)),
    ("filetransfers", "POST", "heartbeat"): Operation(
        "a component instance of asoworker is alive; workers silent for longer than timeout are taken over "
        "in the same transaction", {"asoworker": True, "host": True, "component": True, "pid": True,
                                    "started_ms": True, "timeout": True}, write(MEMBERSHIP)),
    ("filetransfers", "GET", "instances"): _q(
        "every component instance's last heartbeat, live if within timeout seconds (default 600)",
        {"timeout": False}, table(INSTANCE_COLUMNS)),
    ("filetransfers", "POST", "setSubmissionIds"): Operation(
        "record the submission id of each row's chunk (rows ACQUIRED by the worker) before it is submitted",
        {"asoworker": True, "list_of_ids": True, "list_of_sid": True, "generation": False}, write(MODIFIED),
        notes="list_of_sid is aligned with list_of_ids"),
    ("filetransfers", "GET", "submittedJobs"): _q(
        "the FTS jobs holding the worker's SUBMITTED (or KILL) rows", {"asoworker": True, "request_type": False},
        table(SUBMITTED_JOB_COLUMNS)),
    ("filetransfers", "POST", "transfersOfJobs"): Operation(
        "the worker's SUBMITTED (or KILL) rows of FTS jobs", {"asoworker": True, "list_of_fts_id": True},
        table(TRANSFER_COLUMNS)),
    ("filetransfers", "GET", "throttleCounts"): _q(
        "rows in flight (ACQUIRED, SUBMITTED) and waiting (NEW) per user, source and destination", {},
        table(THROTTLE_COLUMNS)),
    ("filetransfers", "GET", "getTransfersToKill"): _q(
        "rows in KILL, oldest first (at most 5000)", {"limit": False}, table(TRANSFER_COLUMNS)),
    ("filetransfers", "GET", "groupedTransferStatistics"): _q(
        "row counts per user, task, transfer and publication state",
        {"username": False, "taskname": False, "request_type": False}, table(STATISTICS_COLUMNS)),
    ("filetransfers", "GET", "groupedPublishStatistics"): _q(
        "row counts per user, task and publication state", {"username": False, "taskname": False},
        table(PUBLISH_STATISTICS_COLUMNS)),
    ("filetransfers", "GET", "getById"): _q(
        "rows by id", {"id": False, "list_of_ids": False}, table(TRANSFER_COLUMNS),
        notes="give id or list_of_ids"),
    ("filetransfers", "POST", "getById"): Operation(
        "rows by id, the ids in the body (no URL length limit)", {"list_of_ids": True}, table(TRANSFER_COLUMNS)),
    ("filetransfers", "GET", "listTransfers"): _q(
        "rows filtered by user, task and state",
        {"username": False, "taskname": False, "state": False, "limit": False}, table(TRANSFER_COLUMNS)),
    # fileusertransfers: users and the job post-processing step
    ("fileusertransfers", "PUT", ""): Operation(
        "inject transfers", _INJECT_PARAMS, write(INJECTED), list_body="transfers", notes=_INJECT_NOTE),
    ("fileusertransfers", "POST", "updateDoc"): Operation(
        "re-inject transfers (as PUT)", _INJECT_PARAMS, write(INJECTED), notes=_INJECT_NOTE),
    ("fileusertransfers", "POST", "killTransfers"): Operation(
        "rows in flight go to KILL", _TASK_OR_IDS, write(KILLED), notes=_TASK_OR_IDS_NOTE),
    ("fileusertransfers", "POST", "killTransfersById"): Operation(
        "rows in flight go to KILL", {"listOfIds": False, "list_of_ids": False}, write(KILLED),
        notes="give listOfIds or list_of_ids"),
    ("fileusertransfers", "POST", "retryTransfers"): Operation(
        "FAILED and KILLED rows back to NEW", _TASK_OR_IDS, write(MODIFIED), notes=_TASK_OR_IDS_NOTE),
    ("fileusertransfers", "GET", "getById"): _q(
        "rows by id", {"id": False, "list_of_ids": False}, table(TRANSFER_COLUMNS), notes="give id or list_of_ids"),
    ("fileusertransfers", "POST", "getById"): Operation(
        "rows by id, the ids in the body (no URL length limit)", {"list_of_ids": True}, table(TRANSFER_COLUMNS)),
    ("fileusertransfers", "GET", "getTransferStatus"): _q(
        "transfer status of a task's rows", {"username": True, "taskname": True}, table(TRANSFER_STATUS_COLUMNS)),
    ("fileusertransfers", "GET", "getPublicationStatus"): _q(
        "publication status of a task's rows", {"username": True, "taskname": True},
        table(PUBLICATION_STATUS_COLUMNS)),
    ("fileusertransfers", "GET", "listTransfers"): _q(
        "rows filtered by user, task and state",
        {"username": False, "taskname": False, "state": False, "limit": False}, table(TRANSFER_COLUMNS)),
    ("fileusertransfers", "GET", "groupedTransferStatistics"): _q(
        "row counts per user, task, transfer and publication state",
        {"username": False, "taskname": False, "request_type": False}, table(STATISTICS_COLUMNS)),
    # tasks
    ("task", "GET", "search"): _q(
        "the task row (none if absent, or another user's for a user)", {"workflow": False, "taskname": False},
        table(TASK_COLUMNS), notes="give workflow or taskname"),
    ("task", "PUT", ""): Operation(
        "create or update tasks", {"tasks": True}, write(MODIFIED), json_only=True),
    ("task", "POST", "updatepublicationtime"): Operation(
        "record the task's last publication", {"workflow": False, "taskname": False, "publicationtime": False},
        write(MODIFIED), notes="give workflow or taskname"),
    # file metadata
    ("filemetadata", "GET", ""): _q("metadata of LFNs", {"lfnList": True}, table(["lfn", "metadata"])),
    ("filemetadata", "POST", "lookup"): Operation(
        "metadata of LFNs, the LFNs in the body (no URL length limit)", {"lfnList": True}, table(["lfn", "metadata"])),
    ("filemetadata", "PUT", ""): Operation(
        "store metadata of LFNs", {"entries": False, "metadata_transfers": False}, write(MODIFIED), json_only=True,
        notes="give entries (or the same list under transfers)"),
}
