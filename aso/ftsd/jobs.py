"""FTS3 jobs as data: submission parsing, job ids, and job state from file states.

Pure functions, no I/O, so the REST layer, the executor and the tests share one reading
of FTS3's rules (reference: fts3.md §3-4).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from aso.ftsd import checksum as ck
from aso.ftsd import urls
from aso.ftsd.errors import FtsHttpError
from aso.ftsd.staging import staging_seconds, starts_staging

#: FTS3's base id for deterministic job ids and VO ids.
BASE_ID = uuid.UUID("01874efb-4735-4595-bc9c-591aef8240c9")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"

JOB_ACTIVE = ("SUBMITTED", "READY", "ACTIVE", "STAGING")
JOB_TERMINAL = ("FINISHED", "FINISHEDDIRTY", "FAILED", "CANCELED")
FILE_TERMINAL = ("FINISHED", "FAILED", "CANCELED")
FAILED_JOB_REASON = "One or more files failed. Please have a look at the details for more information"
#: FTS3's held state: a later hop of a multihop job waits in it for the hop before
HELD = "NOT_USED"
METADATA_LIMIT = 1024
DEFAULT_RETRY_DELAY = 120
DEFAULT_PRIORITY = 3
SUPPORTED_SCHEMES = urls.SUPPORTED_SCHEMES
#: longest max_time_in_queue accepted (100 years), so now + it stays a 64-bit integer
MAX_QUEUE_SECONDS = 100 * 366 * 86400


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
    selection_strategy: str = "auto"


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
    #: seconds a file may take to come online (-1: no bring-online; aso.ftsd.staging)
    bring_online: int = -1
    #: seconds a staged file stays pinned online (-1: none asked for)
    copy_pin_lifetime: int = -1

    @property
    def staging(self) -> bool:
        return starts_staging(self.bring_online, self.copy_pin_lifetime)


def storage_element(url: str) -> str:
    """``scheme://host`` of a URL (FTS3's source_se / dest_se)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}"


def _url(value: Any, field: str, roots: Sequence[str]) -> str:
    if not isinstance(value, str) or not value:
        raise FtsHttpError(400, f"Invalid value within the request: {field} must be a URL string")
    shown = repr(value[:200])
    try:
        urls.check_url(value)
    except urls.UrlError as exc:
        raise FtsHttpError(400, f"Invalid value within the request: {field} {shown}: {exc}") from None
    if urlsplit(value).scheme == "file" and not urls.under_roots(urls.file_path(value), roots):
        raise FtsHttpError(400, f"Invalid value within the request: {field} {shown}: {urls.refused_root_message(roots)}")
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


#: the largest integer any column holds (a signed 64-bit integer)
MAX_INT = 2**63 - 1
MAX_INT32 = 2**31 - 1
_INT_TEXT = re.compile(r"[+-]?[0-9]{1,19}")


def parse_int(value: Any, field: str, default: int | None = None, minimum: int = 0, maximum: int = MAX_INT) -> int:
    """An integer given as a JSON integer or a string of ASCII digits, within bounds.

    Floats (1.0, 1e999), booleans, and digits from other scripts are refused: FTS3 wants an
    integer, and ``int()`` would take some of them."""
    if value is None:
        return default
    bad = FtsHttpError(400, f"Invalid value within the request: {field} must be an integer from {minimum} to {maximum}")
    if isinstance(value, str):
        text = value.strip()
        if not _INT_TEXT.fullmatch(text):
            raise bad
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise bad
    return value


#: FTS3's source selection strategies (it keeps the one submitted and reports it back)
SELECTION_STRATEGIES = (
    "auto", "orderly", "queue", "success", "throughput", "file-throughput", "pending-data",
    "waiting-time", "waiting-time-with-error", "duration",
)


def selection_strategy(value: Any, field: str, default: str = "auto") -> str:
    """A file's ``selection_strategy``: one of FTS3's names, the default when absent."""
    if value is None or value == "":
        return default
    if value not in SELECTION_STRATEGIES:
        raise FtsHttpError(400, f"Invalid value within the request: {field} must be one of {', '.join(SELECTION_STRATEGIES)}")
    return value


def clamp_priority(value: int) -> int:
    """FTS3's priorities are 1 to 5; an integer outside is clamped to that range, as FTS3 does."""
    return min(5, max(1, value))


def queue_seconds(value: Any) -> int | None:
    """``max_time_in_queue``: an int is hours; strings take an s/m/h/d suffix."""
    if value in (None, 0, "0", ""):
        return None
    bad = FtsHttpError(400, f"Invalid value within the request: max_time_in_queue {str(value)[:40]!r}"
                            f" (hours, or a number with an s/m/h/d suffix, at most {MAX_QUEUE_SECONDS} seconds)")
    if isinstance(value, bool):
        raise bad
    if isinstance(value, int):
        seconds = value * 3600
    elif isinstance(value, str) and (m := re.fullmatch(r"\s*([0-9]{1,19})\s*([smhd]?)\s*", value)):
        seconds = int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "": 3600}[m.group(2)]
    else:
        raise bad
    if not 0 <= seconds <= MAX_QUEUE_SECONDS:
        raise bad
    return seconds or None


#: what FTS3 reads as yes in a boolean parameter
_YES = (True, "Y", "y", "true", "True", 1)


def _check_hops(specs: list[FileSpec]) -> None:
    """A multihop job's files are its hops in order: each starts where the one before ended."""
    if len(specs) < 2:
        raise FtsHttpError(400, "Invalid value within the request: files: a multihop job needs at least 2 hops")
    for i in range(len(specs) - 1):
        if specs[i + 1].source != specs[i].destination:
            raise FtsHttpError(400, f"Invalid value within the request: files[{i + 1}].sources[0] must be the destination"
                                    f" of files[{i}] (multihop jobs are a chain of hops)")


def parse_submission(body: Any, now: float | None = None, roots: Sequence[str] = ()) -> JobSpec:
    """Validate a POST /jobs body into a JobSpec; FtsHttpError(400) naming the problem.

    ``roots``: the local folders file:// URLs (sources and destinations) must lie under;
    none: every file:// URL is refused."""
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

    # Rucio sends it per file; the official client's bulk submission per job
    job_strategy = selection_strategy(params.get("selection_strategy"), "params.selection_strategy")
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
        source = _url(sources[0], f"{where}.sources[0]", roots)
        destination = _url(destinations[0], f"{where}.destinations[0]", roots)
        filesize = parse_int(f.get("filesize"), f"{where}.filesize", None)
        activity = f.get("activity") or "default"
        if not isinstance(activity, str) or len(activity) > 255:
            raise FtsHttpError(400, f"Invalid value within the request: {where}.activity must be a string of at most 255 characters")
        specs.append(
            FileSpec(
                source=source,
                destination=destination,
                source_se=storage_element(source),
                dest_se=storage_element(destination),
                checksum=ck.parse(f.get("checksum"), f"{where}.checksum"),
                filesize=filesize,
                metadata=_metadata(f.get("metadata"), f"{where}.metadata"),
                activity=activity,
                file_index=index,
                selection_strategy=selection_strategy(f.get("selection_strategy"), f"{where}.selection_strategy", job_strategy),
            )
        )

    has_value = any(s.checksum.value for s in specs)
    reuse = params.get("reuse") in _YES
    multihop = params.get("multihop") in _YES
    if multihop:
        if reuse:
            raise FtsHttpError(400, "Invalid value within the request: params.reuse can not be combined with params.multihop")
        _check_hops(specs)
    job_type = "H" if multihop else "Y" if reuse else "N"
    if job_type == "Y" and len({(s.source_se, s.dest_se) for s in specs}) > 1:
        raise FtsHttpError(400, "Invalid value within the request: reuse jobs need one source and one destination storage")
    priority = clamp_priority(parse_int(params.get("priority"), "priority", DEFAULT_PRIORITY, minimum=-MAX_INT))
    retry = parse_int(params.get("retry"), "retry", 0, minimum=-MAX_INT)
    retry_delay = parse_int(params.get("retry_delay"), "retry_delay", 0) or DEFAULT_RETRY_DELAY
    in_queue = queue_seconds(params.get("max_time_in_queue"))
    generator = params.get("id_generator") or "standard"
    if generator not in ("standard", "deterministic"):
        raise FtsHttpError(400, f"Invalid value within the request: id_generator {generator!r}")
    sid = params.get("sid")
    if generator == "deterministic" and (not isinstance(sid, str) or not sid):
        raise FtsHttpError(400, "Missing parameter: sid (needed with id_generator deterministic)")
    internal = {k: params[k] for k in ("timeout", "nostreams", "buffer_size", "strict_copy") if k in params}
    if multihop and params.get("overwrite_hop") in _YES:
        internal["overwrite_hop"] = True  # intermediate hops may replace what is at their destination
    for key in ("timeout", "nostreams", "buffer_size"):
        if key in internal:
            internal[key] = parse_int(internal[key], key, None, maximum=MAX_INT32)
    overwrite = params.get("overwrite") in _YES
    return JobSpec(
        files=specs,
        verify_checksum=ck.mode_from_param(params.get("verify_checksum"), has_value),
        overwrite=overwrite,
        priority=priority,
        # 0: the service's default; negative: never retried (FTS3's reading)
        retry=retry,
        retry_delay=retry_delay,
        max_time_in_queue=int(now + in_queue) if in_queue else None,
        job_metadata=_metadata(params.get("job_metadata"), "job_metadata"),
        job_type=job_type,
        sid=sid if generator == "deterministic" else None,
        deterministic=generator == "deterministic",
        internal=internal,
        bring_online=staging_seconds(params.get("bring_online"), "bring_online"),
        copy_pin_lifetime=staging_seconds(params.get("copy_pin_lifetime"), "copy_pin_lifetime"),
    )


def job_state(file_states: Iterable[str], multihop: bool = False) -> str:
    """The job's state from its files' states, as FTS3 derives it (one replica per index).

    ``multihop``: FTS3's multihop rules: FAILED as soon as a hop failed or was canceled,
    FINISHED once every hop (the last one included) finished; a held hop (NOT_USED) waits."""
    states = list(file_states)
    if not states:
        return "FAILED"
    if multihop:
        return _multihop_state(states)
    if any(s not in FILE_TERMINAL for s in states):
        if any(s in ("ACTIVE", "READY") for s in states):
            return "ACTIVE"
        return "STAGING" if "STAGING" in states else "SUBMITTED"
    finished = sum(1 for s in states if s == "FINISHED")
    if finished == len(states):
        return "FINISHED"
    if finished:
        return "FINISHEDDIRTY"
    if all(s == "CANCELED" for s in states):
        return "CANCELED"
    return "FAILED"


def _multihop_state(states: list[str]) -> str:
    if any(s in ("FAILED", "CANCELED") for s in states):
        return "FAILED"
    if all(s == "FINISHED" for s in states):
        return "FINISHED"
    if "STAGING" in states:  # its first hop waits for a bring-online
        return "STAGING"
    # a finished hop with the next one waiting for a slot: the job is under way
    return "ACTIVE" if any(s in ("ACTIVE", "READY", "FINISHED") for s in states) else "SUBMITTED"


def job_reason(state: str) -> str | None:
    """FTS3 clears the reason of a FINISHED job and explains every other final state."""
    if state in ("FINISHEDDIRTY", "FAILED", "CANCELED"):
        return FAILED_JOB_REASON
    return None
