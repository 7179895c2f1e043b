"""Transfer requests (what a job's post-processing step injects) checked into rows.

One function reads a request the way every entry point must: the store before writing,
the REST client before sending anything (so a bad row 11,000 of 12,000 is found before row
0 is written), the server through the store.
"""

from __future__ import annotations

from typing import Any

from aso import validate
from aso.errors import ValidationError
from aso.state.states import PublicationState as P
from aso.state.states import TransferState as T

#: retries when neither the request nor the configuration says ([transfer] max_retry and
#: [publisher] max_retry override it where the row is stored)
DEFAULT_MAX_RETRY = 3
#: retry counts and increments stay far below a 32-bit column's limit, however often added
MAX_RETRY_LIMIT = 1000


#: ``tm_type`` values: a job's output, its log, or a stage-in (bring a file online from tape)
TYPES = ("output", "log", "stagein")
STAGEIN = "stagein"
#: what a pipeline pass acquires (``request_type``): ordinary transfers (output and log
#: rows: aso transfer) or stage-ins (aso stager); None (no filter) takes both
REQUEST_TYPES = ("transfer", "stagein")


def request_type(value: Any, field: str = "request_type") -> str | None:
    """A pass's ``request_type`` filter (None or '' when absent), or a ValidationError."""
    if value in (None, ""):
        return None
    if value not in REQUEST_TYPES:
        raise ValidationError(field, f"expected 'transfer' or 'stagein', got {str(value)[:100]!r}")
    return value


def _check_stagein(req: dict, publish: int, f) -> None:
    """What the state server can check of a stage-in (it does not know which sites are tape;
    ``aso stager`` fails a row whose site is not): one site, one LFN, nothing to publish."""
    if req["destination"] != req["source"]:
        raise ValidationError(f("destination"), f"a stage-in stages a file in place: must be the source site "
                                                f"{str(req['source'])[:100]!r}, got {str(req['destination'])[:100]!r}")
    if req["destination_lfn"] != req["source_lfn"]:
        raise ValidationError(f("destination_lfn"), "a stage-in stages a file in place: must be source_lfn")
    if publish:
        raise ValidationError(f("publish"), "a stage-in publishes nothing: must be 0")


def transfer_row(
    i: int, req: Any, now: int, max_retry: int = DEFAULT_MAX_RETRY, publication_max_retry: int = DEFAULT_MAX_RETRY
) -> dict[str, Any]:
    """The ``filetransfersdb`` row for transfer request number ``i``, or a ValidationError
    naming ``[i].<field>``. Pure: the store, the REST client and the CLI check alike.

    ``max_retry`` applies when the request gives none (a request's own ``max_retry``,
    0 included, is kept as given)."""

    def f(name: str) -> str:
        return f"[{i}].{name}"

    if not isinstance(req, dict):
        raise ValidationError(f"[{i}]", "each transfer request must be an object")
    for name in ("username", "taskname", "source", "destination", "source_lfn", "destination_lfn", "filesize"):
        if req.get(name) in (None, ""):
            raise ValidationError(f(name), "is required")
    source_lfn = validate.lfn(req["source_lfn"], f("source_lfn"))
    row_id = validate.lfn_id(source_lfn)
    if req.get("id") not in (None, "") and req["id"] != row_id:
        raise ValidationError(f("id"), "must be the sha224 hex digest of source_lfn (or be left out)")
    publish = req.get("publish", 0)
    if isinstance(publish, bool):
        publish = int(publish)
    if isinstance(publish, str) and publish.strip() in ("0", "1"):
        publish = int(publish)
    if publish not in (0, 1):
        raise ValidationError(f("publish"), f"expected 0 or 1, got {publish!r}")
    kind = req.get("type", "output")
    if kind not in TYPES:
        raise ValidationError(f("type"), f"expected 'output', 'log' or 'stagein', got {kind!r}")
    if kind == STAGEIN:
        _check_stagein(req, publish, f)
    state = T.parse(req.get("transfer_state", "NEW"), f("transfer_state"))
    if state not in (T.NEW, T.DONE):
        raise ValidationError(f("transfer_state"), "a new transfer is NEW, or DONE for a direct stage-out")
    checksum = req.get("checksum")
    if isinstance(checksum, dict):  # CRAB's {"adler32": ..., "cksum": ...}
        checksum = checksum.get("adler32")
    job_id = req.get("job_id")
    if job_id is not None:
        job_id = str(job_id)
        if len(job_id) > 64:
            raise ValidationError(f("job_id"), "longer than 64 characters")
    worker = req.get("asoworker")
    if worker is not None:
        validate.worker(worker, f("asoworker"))
    return {
        "tm_id": row_id,
        "tm_username": validate.username(req["username"], f("username")),
        "tm_taskname": validate.taskname(req["taskname"], f("taskname")),
        "tm_source": validate.site(req["source"], f("source")),
        "tm_destination": validate.site(req["destination"], f("destination")),
        "tm_source_lfn": source_lfn,
        "tm_destination_lfn": validate.lfn(req["destination_lfn"], f("destination_lfn")),
        "tm_filesize": validate.non_negative_int(req["filesize"], f("filesize")),
        "tm_checksum": validate.adler32(checksum, f("checksum")) if checksum not in (None, "") else None,
        "tm_publish": publish,
        "tm_jobid": job_id,
        "tm_job_retry_count": validate.non_negative_int(req.get("job_retry_count", 0), f("job_retry_count"), validate.MAX_INT32),
        "tm_type": kind,
        "tm_aso_worker": worker,
        "tm_transfer_state": int(state),
        "tm_publication_state": int(P.NEW if publish else P.NOT_REQUIRED),
        "tm_transfer_retry_count": 0,
        "tm_publication_retry_count": 0,
        "tm_transfer_max_retry_count": validate.non_negative_int(max_retry if req.get("max_retry") in (None, "") else req["max_retry"], f("max_retry"), MAX_RETRY_LIMIT),
        "tm_publication_max_retry_count": publication_max_retry,
        "tm_transfer_failure_reason": None,
        "tm_publication_failure_reason": None,
        "tm_fts_id": None,
        "tm_fts_instance": None,
        "tm_path": None,
        "tm_sid": None,
        "tm_dbs_blockname": None,
        "tm_block_complete": None,
        "tm_start_time": validate.non_negative_int(req.get("start_time", now), f("start_time")),
        "tm_last_update": now,
        "tm_end_time": now if state == T.DONE else None,
        "tm_creation_time": now,
    }
