"""FTS3 jobs as data: submission parsing, job ids, and job state from file states.

Pure functions, no I/O, so the REST layer, the executor and the tests share one reading
of FTS3's rules (reference: fts3.md §3-4).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from aso.ftsd import checksum as ck
from aso.ftsd.errors import FtsHttpError

#: FTS3's base id for deterministic job ids and VO ids.
BASE_ID = uuid.UUID("01874efb-4735-4595-bc9c-591aef8240c9")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"

JOB_ACTIVE = ("SUBMITTED", "READY", "ACTIVE", "STAGING")
JOB_TERMINAL = ("FINISHED", "FINISHEDDIRTY", "FAILED", "CANCELED")
FILE_ACTIVE = ("SUBMITTED", "READY", "ACTIVE")
FILE_TERMINAL = ("FINISHED", "FAILED", "CANCELED")
FAILED_JOB_REASON = "One or more files failed. Please have a look at the details for more information"
METADATA_LIMIT = 1024
DEFAULT_RETRY_DELAY = 120
DEFAULT_PRIORITY = 3
SUPPORTED_SCHEMES = ("file", "http", "https", "root")


def fts_time(epoch: float | None) -> str | None:
    """FTS3's timestamp: naive UTC, no zone, no fractions."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime(TIME_FORMAT)


def deterministic_job_id(vo_name: str, sid: str) -> str:
    """``uuid5(uuid5(BASE_ID, vo), sid)``: the id a client can compute before submitting."""
    return str(uuid.uuid5(uuid.uuid5(BASE_ID, vo_name), sid))


@dataclass
class FileSpec:
    source: str
    destination: str
    source_se: str
    dest_se: str
    checksum: ck.Checksum
    filesize: int | None
    metadata: dict[str, Any]
    activity: str
    file_index: int


@dataclass
class JobSpec:
    files: list[FileSpec]
    verify_checksum: str
    overwrite: bool
    priority: int
    retry: int
    retry_delay: int
    max_time_in_queue: int | None  # absolute epoch seconds
    job_metadata: dict[str, Any]
    job_type: str
    sid: str | None
    deterministic: bool
    internal: dict[str, Any] = field(default_factory=dict)


def storage_element(url: str) -> str:
    """``scheme://host`` of a URL (FTS3's source_se / dest_se)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}"


def _url(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise FtsHttpError(400, f"Invalid value within the request: {field} must be a URL string")
    parts = urlsplit(value)
    if parts.scheme not in SUPPORTED_SCHEMES:
        raise FtsHttpError(400, f"Invalid value within the request: {field} {value!r}: scheme must be one of {', '.join(SUPPORTED_SCHEMES)}")
    if not parts.path or parts.path == "/":
        raise FtsHttpError(400, f"Invalid value within the request: {field} {value!r} has no path")
    if parts.scheme != "file" and not parts.hostname:
        raise FtsHttpError(400, f"Invalid value within the request: {field} {value!r} has no host")
    if parts.scheme == "file" and parts.netloc not in ("", "localhost"):
        raise FtsHttpError(400, f"Invalid value within the request: {field} {value!r}: file URLs are local (file:///path)")
    if ".." in parts.path.split("/"):
        raise FtsHttpError(400, f"Invalid value within the request: {field} {value!r} contains '..'")
    return value


def _metadata(value: Any, field: str) -> dict[str, Any]:
    import json

    if value is None:
        return {}
    if isinstance(value, str):
        value = {"label": value}
    if not isinstance(value, dict):
        raise FtsHttpError(400, f"Invalid value within the request: {field} must be an object or a string")
    if len(json.dumps(value)) > METADATA_LIMIT:
        raise FtsHttpError(400, f"Invalid value within the request: {field} is longer than {METADATA_LIMIT} characters")
    return value


def _int(value: Any, field: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise FtsHttpError(400, f"Invalid value within the request: {field} must be an integer")
    try:
        return int(value)
    except ValueError:
        raise FtsHttpError(400, f"Invalid value within the request: {field} must be an integer") from None


def queue_seconds(value: Any) -> int | None:
    """``max_time_in_queue``: an int is hours; strings take an s/m/h/d suffix."""
    if value in (None, 0, "0", ""):
        return None
    if isinstance(value, bool):
        raise FtsHttpError(400, "Invalid value within the request: max_time_in_queue")
    if isinstance(value, int):
        return value * 3600
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", value)
        if m:
            return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "": 3600}[m.group(2)]
    raise FtsHttpError(400, f"Invalid value within the request: max_time_in_queue {value!r}")


def parse_submission(body: Any, now: float | None = None) -> JobSpec:
    """Validate a POST /jobs body into a JobSpec; FtsHttpError(400) naming the problem."""
    now = time.time() if now is None else now
    if not isinstance(body, dict):
        raise FtsHttpError(400, "Badly formatted JSON request")
    if body.get("delete"):
        raise FtsHttpError(405, "Deletion jobs are not supported by this service")
    files = body.get("files")
    if files is None:
        raise FtsHttpError(400, "Missing parameter: files")
    if not isinstance(files, list) or not files:
        raise FtsHttpError(400, "No transfers or namespace operations specified")
    params = body.get("params") or {}
    if not isinstance(params, dict):
        raise FtsHttpError(400, "Invalid value within the request: params must be an object")

    specs: list[FileSpec] = []
    for index, f in enumerate(files):
        where = f"files[{index}]"
        if not isinstance(f, dict):
            raise FtsHttpError(400, f"Invalid value within the request: {where} must be an object")
        sources, destinations = f.get("sources"), f.get("destinations")
        if not isinstance(sources, list) or not sources:
            raise FtsHttpError(400, f"Missing parameter: {where}.sources")
        if not isinstance(destinations, list) or not destinations:
            raise FtsHttpError(400, f"Missing parameter: {where}.destinations")
        if len(sources) > 1 or len(destinations) > 1:
            raise FtsHttpError(400, f"Invalid value within the request: {where}: multi-replica jobs (several sources or destinations) are not supported by this service")
        source = _url(sources[0], f"{where}.sources[0]")
        destination = _url(destinations[0], f"{where}.destinations[0]")
        filesize = f.get("filesize")
        if filesize is not None:
            filesize = _int(filesize, f"{where}.filesize", 0)
            if filesize < 0:
                raise FtsHttpError(400, f"Invalid value within the request: {where}.filesize must not be negative")
        specs.append(
            FileSpec(
                source=source,
                destination=destination,
                source_se=storage_element(source),
                dest_se=storage_element(destination),
                checksum=ck.parse(f.get("checksum"), f"{where}.checksum"),
                filesize=filesize,
                metadata=_metadata(f.get("metadata"), f"{where}.metadata"),
                activity=str(f.get("activity") or "default"),
                file_index=index,
            )
        )

    has_value = any(s.checksum.value for s in specs)
    reuse = params.get("reuse")
    job_type = "Y" if reuse in (True, "Y", "y", "true") else "N"
    if job_type == "Y" and len({(s.source_se, s.dest_se) for s in specs}) > 1:
        raise FtsHttpError(400, "Invalid value within the request: reuse jobs need one source and one destination storage")
    priority = min(5, max(1, _int(params.get("priority"), "priority", DEFAULT_PRIORITY)))
    retry = _int(params.get("retry"), "retry", 0)
    retry_delay = _int(params.get("retry_delay"), "retry_delay", 0) or DEFAULT_RETRY_DELAY
    in_queue = queue_seconds(params.get("max_time_in_queue"))
    generator = params.get("id_generator") or "standard"
    if generator not in ("standard", "deterministic"):
        raise FtsHttpError(400, f"Invalid value within the request: id_generator {generator!r}")
    sid = params.get("sid")
    if generator == "deterministic" and (not isinstance(sid, str) or not sid):
        raise FtsHttpError(400, "Missing parameter: sid (needed with id_generator deterministic)")
    overwrite = params.get("overwrite") in (True, "Y", "y", "true", "True", 1)
    return JobSpec(
        files=specs,
        verify_checksum=ck.mode_from_param(params.get("verify_checksum"), has_value),
        overwrite=overwrite,
        priority=priority,
        # 0: the service's default; negative: never retried (FTS3's reading)
        retry=retry,
        retry_delay=max(0, retry_delay),
        max_time_in_queue=int(now + in_queue) if in_queue else None,
        job_metadata=_metadata(params.get("job_metadata"), "job_metadata"),
        job_type=job_type,
        sid=sid if generator == "deterministic" else None,
        deterministic=generator == "deterministic",
        internal={k: params[k] for k in ("timeout", "nostreams", "buffer_size", "strict_copy") if k in params},
    )


def job_state(file_states: Iterable[str]) -> str:
    """The job's state from its files' states, as FTS3 derives it (one replica per index)."""
    states = list(file_states)
    if not states:
        return "FAILED"
    if any(s not in FILE_TERMINAL for s in states):
        return "ACTIVE" if any(s in ("ACTIVE", "READY") for s in states) else "SUBMITTED"
    finished = sum(1 for s in states if s == "FINISHED")
    if finished == len(states):
        return "FINISHED"
    if finished:
        return "FINISHEDDIRTY"
    if all(s == "CANCELED" for s in states):
        return "CANCELED"
    return "FAILED"


def job_reason(state: str) -> str | None:
    """FTS3 clears the reason of a FINISHED job and explains every other final state."""
    if state in ("FINISHEDDIRTY", "FAILED", "CANCELED"):
        return FAILED_JOB_REASON
    return None
