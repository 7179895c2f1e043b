"""FTS3's monitoring messages, both ways: the bodies ``aso fts-server`` publishes and the
completion record ``aso receiver`` reads out of what any FTS3 publishes.

Field names, units and quirks follow FTS3 (``../shared/reference/fts3.md`` §6, from
msg-ifce.cpp, LegacyReporter.cpp and BrokerConnection.cpp):

- the body is compact JSON followed by one space (before FTS 3.6 a 0x04 byte; consumers
  strip the last byte, so the space stays);
- times are milliseconds since the epoch;
- ``file_metadata`` and ``job_metadata`` are JSON objects (an empty one, or ``"x"``, is
  null);
- ``t_final_transfer_state`` is ``Ok``, ``Error`` or ``Abort``;
- ``t__error_message`` has non-printable characters turned into spaces, newlines and quotes
  removed, and at most 1024 characters;
- ``job_state`` is ``UNKNOWN`` for a regular job; for multi-replica and multihop jobs it
  says whether the job as a whole ended (:func:`completion_job_state`).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aso.transfertools.base import HOP_KEY, HOPS_KEY

#: FTS3's default topic names (fts-activemq.conf)
COMPLETE_TOPIC = "transfer.fts_monitoring_complete"
STATE_TOPIC = "transfer.fts_monitoring_state"
#: FTS3 sets a 24 h time-to-live on its messages
MESSAGE_TTL_SECONDS = 24 * 3600
ERROR_MESSAGE_LIMIT = 1024
#: the file metadata key under which aso's row id travels (CRAB's name), read back from
#: status answers and from completion messages
ROW_ID_KEY = "oracleId"
#: FTS3's reason for the hops of a multihop job after the one that failed (they never ran)
UNUSED_HOP_REASON = "Unused hop in multi-hop"

#: an FTS file state that ends an attempt -> t_final_transfer_state
FINAL_TRANSFER_STATE = {"FINISHED": "Ok", "FAILED": "Error", "CANCELED": "Abort"}
#: t_final_transfer_state -> the FTS file state it reports
FILE_STATE_OF = {"OK": "FINISHED", "ERROR": "FAILED", "ABORT": "CANCELED"}


def destination(name: str, topic: bool = True) -> str:
    """A STOMP destination for a topic or queue name (FTS3's ``TOPIC`` setting)."""
    return f"/{'topic' if topic else 'queue'}/{name}"


def encode(body: dict[str, Any]) -> str:
    """A message body as FTS3 writes it: compact JSON and one trailing space."""
    return json.dumps(body, separators=(",", ":")) + " "


def clean_error_message(text: str | None) -> str:
    """``t__error_message``: non-printables to spaces, newlines and quotes removed, cut."""
    if not text:
        return ""
    text = text.replace("\n", "").replace("\r", "").replace('"', "").replace("'", "")
    text = "".join(c if c.isprintable() else " " for c in text)
    return text[:ERROR_MESSAGE_LIMIT]


_REASON = re.compile(r"(?P<scope>[A-Z_]+) \[(?P<code>[0-9]+)\] (?P<text>.*)", re.DOTALL)


def split_reason(reason: str | None) -> tuple[str, int, str]:
    """An FTS3 reason ``"SCOPE [errno] text"`` as (scope, errno, text); ("", 0, reason) when
    it does not have that shape."""
    if not reason:
        return "", 0, ""
    m = _REASON.fullmatch(reason)
    if not m:
        return "", 0, reason
    return m.group("scope"), int(m.group("code")), m.group("text")


def join_reason(scope: str, code: int, text: str) -> str:
    """The inverse of :func:`split_reason`: the reason the poll path would read."""
    if scope:
        return f"{scope} [{code}] {text}"
    return text


def hop_reason(reason: str | None, hop: int, hops: int, source_site: str = "", destination_site: str = "") -> str:
    """A multihop job's failure as aso records it for the row: which hop failed, then FTS's
    reason (``hop 2/3 (B -> C): ...``); the poll path and the receiver say it alike."""
    where = f" ({source_site} -> {destination_site})" if source_site and destination_site else ""
    return f"hop {hop}/{hops}{where}: {reason or 'failed without a reason'}"


def error_category(code: int) -> str:
    """``tr_error_category``: strerror of the errno, upper case, words joined by ``_``."""
    if not code:
        return ""
    words = re.sub(r"[^A-Za-z0-9]+", " ", os.strerror(code)).split()
    return "_".join(w.upper() for w in words)


def completion_job_state(job_type: str, outcome: str, *, last_hop: bool = True, replicas_left: bool = False,
                         retried: bool = False) -> str:
    """``job_state`` of a completion message (FTS3's LegacyReporter rules).

    ``job_type``: N regular, Y reuse, R multi-replica, H multihop; ``outcome`` the file's
    FTS state (FINISHED, FAILED, CANCELED). A regular job's messages say UNKNOWN. A
    multi-replica job FINISHED on a success, FAILED when the last replica failed, else
    ACTIVE (another replica will be tried). A multihop job FAILED on any failure, FINISHED
    after the last hop, else ACTIVE. ``retried``: a failed attempt the service tries again
    (FTS3 never retries a multihop hop; aso fts-server does, and the job is then still ACTIVE)."""
    ok = outcome == "FINISHED"
    if job_type == "R":
        if ok:
            return "FINISHED"
        return "ACTIVE" if replicas_left else "FAILED"
    if job_type == "H":
        if not ok:
            return "ACTIVE" if retried else "FAILED"
        return "FINISHED" if last_hop else "ACTIVE"
    return "UNKNOWN"


def _ms(epoch: float | None) -> int:
    return int(round(epoch * 1000)) if epoch else 0


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def _scheme(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else ""


def _metadata(value: Any) -> Any:
    """FTS3 sends metadata parsed; empty or ``"x"`` is null."""
    if value in (None, "", "x", {}):
        return None
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


@dataclass(frozen=True)
class FileOutcome:
    """What the service knows about one file when an attempt ends: the rows of ``t_file``
    and ``t_job`` it is built from, read in the same transaction as the state change."""

    file_id: int
    job_id: str
    job_type: str
    source: str
    destination: str
    source_se: str
    dest_se: str
    vo_name: str
    user_dn: str
    activity: str
    #: FINISHED, FAILED or CANCELED: how this attempt ended
    outcome: str
    reason: str | None
    recoverable: bool
    retry: int
    retry_max: int
    start_time: float | None
    finish_time: float
    filesize: int | None
    user_filesize: int | None
    checksum: str
    file_metadata: Any
    job_metadata: Any
    submit_time: float
    #: the job's state after this change (for the state message)
    job_state: str
    #: the file's state after this change (SUBMITTED again when it will be retried)
    file_state: str
    #: the last hop of a multihop job (True for any file of another job)
    last_hop: bool = True
    #: this failed attempt will be retried (the file is queued again)
    retried: bool = False
    #: bring-online: when the file's staging started and ended (None: not staged)
    staging_start: float | None = None
    staging_finished: float | None = None


def completion_body(f: FileOutcome, endpoint: str, vo: str | None = None) -> dict[str, Any]:
    """The completion message (``transfer.fts_monitoring_complete``) for one ended attempt."""
    scope, code, text = split_reason(f.reason) if f.outcome != "FINISHED" else ("", 0, "")
    if f.outcome == "CANCELED" and not code:
        code = 125  # ECANCELED: FTS3 reports an abort with it
        text = text or f.reason or "Transfer canceled"
        scope = scope or "TRANSFER"
    start = f.start_time or f.finish_time
    duration_ms = max(0, _ms(f.finish_time) - _ms(start))
    size = f.filesize if f.filesize is not None else (f.user_filesize or 0)
    src_host, dst_host = _host(f.source), _host(f.destination)
    stamp = time.strftime("%Y-%m-%d-%H%M", time.gmtime(start))
    final = FINAL_TRANSFER_STATE[f.outcome]
    phase = "" if f.outcome == "FINISHED" else ("TRANSFER_PREPARATION" if not f.start_time else "TRANSFER")
    return {
        "tr_id": f"{stamp}__{src_host}__{dst_host}__{f.file_id}__{f.job_id}",
        "endpnt": endpoint,
        "src_srm_v": "", "dest_srm_v": "",
        "vo": vo or f.vo_name,
        "src_url": f.source, "dst_url": f.destination,
        "src_hostname": src_host, "dst_hostname": dst_host,
        "src_site_name": "", "dst_site_name": "",
        "t_channel": f"{f.source_se}__{f.dest_se}", "channel_type": "urlcopy",
        "timestamp_tr_st": _ms(start), "timestamp_tr_comp": _ms(f.finish_time),
        "timestamp_chk_src_st": _ms(start), "timestamp_chk_src_ended": _ms(start),
        "timestamp_checksum_dest_st": _ms(f.finish_time), "timestamp_checksum_dest_ended": _ms(f.finish_time),
        "t_timeout": 0, "chk_timeout": 0,
        "t_error_code": code,
        "tr_error_scope": scope,
        "t_failure_phase": phase,
        "tr_error_category": error_category(code),
        "t_final_transfer_state": final,
        "t_final_transfer_state_flag": 1 if final == "Ok" else 0,
        "tr_bt_transfered": size if final == "Ok" else 0,
        "nstreams": 1, "buf_size": 0, "tcp_buf_size": 0, "block_size": 0,
        "f_size": size,
        "time_srm_prep_st": 0, "time_srm_prep_end": 0, "time_srm_fin_st": 0, "time_srm_fin_end": 0,
        "srm_space_token_src": "", "srm_space_token_dst": "",
        "t__error_message": clean_error_message(text),
        "tr_timestamp_start": _ms(start), "tr_timestamp_complete": _ms(f.finish_time),
        "transfer_time": duration_ms, "operation_time": duration_ms,
        "throughput": (size / 1024.0) / (duration_ms / 1000.0) if duration_ms and final == "Ok" else 0.0,
        "channel": f"{f.source_se}__{f.dest_se}",
        "user_dn": f.user_dn,
        "file_metadata": _metadata(f.file_metadata),
        "job_metadata": _metadata(f.job_metadata),
        "retry": f.retry, "retry_max": f.retry_max,
        "job_m_replica": "true" if f.job_type == "R" else "false",
        "job_multihop": "true" if f.job_type == "H" else "false",
        "transfer_lasthop": "true" if f.job_type == "H" and f.last_hop else "false",
        "is_archiving": "false",
        "is_recoverable": "true" if f.recoverable else "false",
        "job_state": completion_job_state(f.job_type, f.outcome, last_hop=f.last_hop, retried=f.retried),
        "job_id": f.job_id, "file_id": f.file_id,
        "src_se": f.source_se, "dst_se": f.dest_se,
        "protocol": _scheme(f.source),
        "src_protocol": _scheme(f.source), "dst_protocol": _scheme(f.destination),
        "activity": f.activity,
        "scitag": None,
        "checksum_type": f.checksum.split(":", 1)[0] if f.checksum else "",
        "ipver": "ipv4",
        "auth_method": "certificate",
        "final_destination": f.destination,
        "transfer_type": "streamed",
    }


def state_body(f: FileOutcome, vo: str | None = None, now: float | None = None) -> dict[str, Any]:
    """The state-change message (``transfer.fts_monitoring_state``) for one file."""
    now = time.time() if now is None else now
    return {
        "user_dn": f.user_dn,
        "src_url": f.source, "dst_url": f.destination,
        "vo_name": vo or f.vo_name,
        "source_se": f.source_se, "dest_se": f.dest_se,
        "job_id": f.job_id, "file_id": f.file_id,
        "job_state": f.job_state, "file_state": f.file_state,
        "retry_counter": f.retry, "retry_max": f.retry_max,
        "user_filesize": f.user_filesize or 0,
        "timestamp": _ms(now), "submit_time": _ms(f.submit_time),
        "staging_start": _ms(f.staging_start), "staging_finished": _ms(f.staging_finished),
        "staging": "true" if f.file_state == "STAGING" else "false",
        "archiving_start": 0, "archiving_finished": 0, "archiving": "false",
        "reason": f.reason or "",
        "job_metadata": _metadata(f.job_metadata),
        "file_metadata": _metadata(f.file_metadata),
    }


# -- reading completion messages ------------------------------------------------------------


class MessageError(ValueError):
    """A message that is not an FTS3 completion message aso can use (the text says why)."""


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    return str(value).strip().lower() in ("true", "1", "yes", "y")


def _int(value: Any, field: str) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise MessageError(f"{field} is not an integer")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise MessageError(f"{field} is not a finite number")
        return int(value)
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if not re.fullmatch(r"[+-]?[0-9]{1,19}", text):
        raise MessageError(f"{field} is not an integer: {text[:40]!r}")
    return int(text)


def _object(value: Any, field: str) -> dict:
    value = _metadata(value)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MessageError(f"{field} is not a JSON object")
    return value


def _refuse_constant(name: str) -> Any:
    raise MessageError(f"the body holds {name}, which is not JSON")


def _text(value: Any, field: str, limit: int = 4096) -> str:
    if value is None:
        return ""
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise MessageError(f"{field} is not a string")
    return str(value)[:limit]


def _reason(final: str, text: str, file_meta: dict) -> str:
    """The reason a completion gives its row: none for a success; for a hop of a multihop job
    that aso submitted (hop metadata on every hop), which hop failed."""
    if final.upper() == "OK":
        return ""
    hop, hops = file_meta.get(HOP_KEY), file_meta.get(HOPS_KEY)
    if isinstance(hop, int) and isinstance(hops, int) and not isinstance(hop, bool) and hops > 1:
        return hop_reason(text, hop, hops, str(file_meta.get("src_site") or ""), str(file_meta.get("dst_site") or ""))
    return text


@dataclass(frozen=True)
class Completion:
    """One FTS3 completion message, as much of it as aso uses."""

    job_id: str
    file_id: int
    #: aso's row id, from the file metadata (None for transfers aso did not submit)
    row_id: str | None
    #: from the job metadata aso submits with
    issuer: str
    instance: str
    user: str
    vo: str
    endpoint: str
    #: Ok, Error or Abort
    final_state: str
    reason: str
    recoverable: bool
    retry: int
    retry_max: int
    job_state: str
    multihop: bool
    #: seconds since the epoch (from ``tr_timestamp_complete``)
    completed: float
    #: ``transfer_lasthop``: the last hop of a multihop job
    last_hop: bool = False

    @property
    def file_state(self) -> str:
        """The FTS file state this attempt ended in (FINISHED, FAILED, CANCELED)."""
        return FILE_STATE_OF[self.final_state.upper()]

    def is_final(self) -> bool:
        """Does this message end the file's life at FTS? A failure FTS will retry itself
        (recoverable, retries left) is not final, nor a multi-replica failure with
        replicas left (``job_state`` ACTIVE in a job that is not multihop: Rucio's rule).

        A multihop job's hops all carry the row id of the one file they move, so a message
        ends that row only when the whole path ended: the last hop finished (``job_state``
        FINISHED says so too, for senders without ``transfer_lasthop``), or the job failed
        or was canceled. An intermediate hop that finished is not the file arriving, and the
        hops FTS3 fails after a failed one ("Unused hop in multi-hop") are not news either: the
        row is reported once, with the reason of the hop that really failed."""
        retried_by_fts = self.final_state.upper() == "ERROR" and self.recoverable and self.retry < self.retry_max
        if retried_by_fts:
            return False
        if self.multihop:
            if self.final_state.upper() == "OK":
                return self.last_hop or self.job_state == "FINISHED"
            if UNUSED_HOP_REASON in self.reason:  # bare, or after FTS3's "SCOPE [errno] "
                return False
            return self.job_state in ("FAILED", "CANCELED")
        return self.job_state != "ACTIVE"

    def is_for(self, issuer: str, instance: str | None, vo: str | None) -> bool:
        """Was the transfer submitted by this installation (issuer, instance, VO)?"""
        if self.issuer != issuer:
            return False
        if instance and self.instance != instance:
            return False
        # CMS's messages say "cms" or "cms/<group>"
        return not vo or self.vo == vo or self.vo.startswith(vo + "/")

    @classmethod
    def from_message(cls, body: str | bytes) -> Completion:
        """Parse a completion message (FTS3's encodings included: the trailing space or
        0x04, metadata as objects or as JSON text); :class:`MessageError` says what is wrong."""
        if isinstance(body, bytes):
            try:
                body = body.decode("utf-8")
            except UnicodeDecodeError:
                raise MessageError("the body is not UTF-8") from None
        body = body.rstrip(" \x04\r\n\t")
        if not body:
            raise MessageError("the body is empty")
        if len(body) > 1024 * 1024:
            raise MessageError("the body is larger than 1 MiB")
        try:
            doc = json.loads(body, parse_constant=_refuse_constant)
        except RecursionError:
            raise MessageError("the body is nested too deeply") from None
        except ValueError as exc:
            raise MessageError(f"the body is not JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise MessageError("the body is not a JSON object")
        final = _text(doc.get("t_final_transfer_state"), "t_final_transfer_state")
        if final.upper() not in FILE_STATE_OF:
            raise MessageError(f"t_final_transfer_state is {final[:40]!r}, not Ok, Error or Abort")
        job_id = _text(doc.get("job_id"), "job_id", 100)
        if not job_id:
            tr_id = _text(doc.get("tr_id"), "tr_id", 1000)
            job_id = tr_id.split("__")[-1] if "__" in tr_id else ""
        if not job_id:
            raise MessageError("neither job_id nor tr_id names the job")
        file_meta = _object(doc.get("file_metadata"), "file_metadata")
        job_meta = _object(doc.get("job_metadata"), "job_metadata")
        row_id = file_meta.get(ROW_ID_KEY)
        scope = _text(doc.get("tr_error_scope"), "tr_error_scope", 100)
        code = _int(doc.get("t_error_code"), "t_error_code")
        text = _text(doc.get("t__error_message"), "t__error_message", ERROR_MESSAGE_LIMIT)
        completed = _int(doc.get("tr_timestamp_complete"), "tr_timestamp_complete") / 1000.0
        return cls(
            job_id=job_id,
            file_id=_int(doc.get("file_id"), "file_id"),
            row_id=str(row_id) if isinstance(row_id, (str, int)) and not isinstance(row_id, bool) else None,
            issuer=_text(job_meta.get("issuer"), "job_metadata.issuer", 100),
            instance=_text(job_meta.get("instance"), "job_metadata.instance", 100),
            user=_text(job_meta.get("user"), "job_metadata.user", 200),
            vo=_text(doc.get("vo"), "vo", 200),
            endpoint=_text(doc.get("endpnt"), "endpnt", 1000),
            final_state=final,
            reason=_reason(final, join_reason(scope, code, text) if scope else text, file_meta),
            recoverable=_flag(doc.get("is_recoverable", False)),
            retry=_int(doc.get("retry"), "retry"),
            retry_max=_int(doc.get("retry_max"), "retry_max"),
            job_state=_text(doc.get("job_state"), "job_state", 40).upper(),
            multihop=_flag(doc.get("job_multihop", False)),
            completed=completed,
            last_hop=_flag(doc.get("transfer_lasthop", False)),
        )
