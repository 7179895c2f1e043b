"""FTS3 over its REST API: delegation and cancellation through the official client
library (``fts3.rest.client``), as CRAB does; whoami, submission and bulk status on the
tool's own kept-alive urllib3 connection with the same credentials. Those three are what
a pass calls thousands of times, and the client's layers cost more than a small call;
besides, the client raises on a 207 multi-status answer, and a partial bulk status must
still deliver the jobs it knows. Errors are worded and classed (transient or refused) as
the client does.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests
import urllib3

from aso.messaging.fts3 import ROW_ID_KEY, UNUSED_HOP_REASON, hop_reason
from aso.transfertools.base import (
    HOP_KEY,
    HOPS_KEY,
    FileResult,
    JobOptions,
    JobResult,
    Transfer,
    TransferTool,
    TransferToolError,
)

#: the file attributes a bulk status asks for
STATUS_FILE_FIELDS = ("file_id", "file_index", "file_state", "source_surl", "dest_surl", "reason", "file_metadata")


def _session_request_class():
    """The client's Request on a kept-alive session: the client opens a new connection for
    every call, which costs more than the call itself for small submissions."""
    from fts3.rest.client.request import Request

    class SessionRequest(Request):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.session = requests.Session()
            # our own verify/cert are passed per call; the environment must not override them
            self.session.trust_env = False

        def method(self, method, url, body=None, headers=None, user=None, passw=None):
            all_headers = {"Accept": "application/json", **(headers or {})}
            if self.fts_access_token:
                all_headers["Authorization"] = "Bearer " + self.fts_access_token
            verify = self.capath if (self.verify and self.capath) else self.verify
            response = self.session.request(method, str(url), data=body, headers=all_headers, verify=verify,
                                            timeout=(self.connectTimeout, self.timeout), cert=(self.ucert, self.ukey))
            self._handle_error(url, response.status_code, response.text)
            return str(response.text)

    return SessionRequest


#: what each endpoint answered on ``GET /`` (its API version), once per process: the
#: client's context asks it on creation, and a pass creates one context per user
_ENDPOINT_INFO: dict[str, dict] = {}


@functools.cache
def _with_known_endpoint(context_class):
    """``context_class`` asking ``GET /`` of an endpoint only the first time in this process
    (a second user's context at the same endpoint saves that round trip; whether the
    endpoint answers, and accepts this user's credentials, the next call finds out)."""

    class KnownEndpointContext(context_class):
        def _validate_endpoint(self):
            info = _ENDPOINT_INFO.get(self.endpoint)
            if info is None:
                info = _ENDPOINT_INFO[self.endpoint] = super()._validate_endpoint()
            return dict(info)

    return KnownEndpointContext


def _client_error(exc: Exception, what: str) -> TransferToolError:
    from fts3.rest.client import exceptions as fx

    transient = isinstance(exc, (fx.ServerError, fx.TryAgain, fx.NeedDelegation, requests.RequestException, OSError))
    return TransferToolError(f"{what}: {type(exc).__name__}: {exc}", transient=transient)


@dataclass(frozen=True)
class _Answer:
    """An FTS answer: its status and body."""

    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


def _status_error(resp: _Answer, what: str) -> TransferToolError:
    """An FTS answer that is not a success, as the client words it: transient when FTS
    is in trouble (5xx) or asks for delegation (419), else a refusal (a retry would be
    refused alike)."""
    try:
        message = resp.json().get("message") or resp.text
    except (ValueError, AttributeError):
        message = resp.text
    transient = resp.status_code >= 500 or resp.status_code == 419
    word = "" if transient else "refused: "
    return TransferToolError(f"{what} {word}HTTP {resp.status_code}: {str(message)[:500]}", transient=transient,
                             status=resp.status_code)


class Fts3Tool(TransferTool):
    name = "fts3"

    def __init__(self, endpoint: str, proxy_path: str, *, ca_dir: str | None = None, timeout: float = 30.0, bulk_size: int = 100):
        self.endpoint = endpoint.rstrip("/")
        self.proxy_path = str(proxy_path)
        self.ca_dir = ca_dir or None
        self.timeout = timeout
        self.bulk_size = bulk_size
        self._context = None
        self._whoami: dict | None = None
        # Over plain HTTP (aso fts-server's single-user mode) there is no TLS to present a proxy in.
        self._tls = self.endpoint.startswith("https://")
        self._pool: urllib3.HTTPConnectionPool | None = None

    # -- the client's context, created on first use (it contacts the endpoint) ---------------

    @property
    def context(self):
        if self._context is None:
            from fts3.rest.client.context import Context

            Context = _with_known_endpoint(Context)  # noqa: N806 - the client's class, wrapped
            try:
                if self._tls:
                    self._context = Context(self.endpoint, ucert=self.proxy_path, ukey=self.proxy_path, verify=True,
                                            capath=self.ca_dir, timeout=self.timeout, connectTimeout=self.timeout,
                                            request_class=_session_request_class())
                else:
                    class _NoCredentialsContext(Context):
                        # client 3.14.2's no_creds path reads this attribute without setting it
                        fts_access_token = None

                    self._context = _NoCredentialsContext(self.endpoint, no_creds=True, timeout=self.timeout,
                                                          connectTimeout=self.timeout,
                                                          request_class=_session_request_class())
            except Exception as exc:
                # The client reports a refused connection as BadEndpoint: retrying later is right.
                raise TransferToolError(f"cannot reach FTS at {self.endpoint}: {type(exc).__name__}: {exc}",
                                        transient=True) from None
        return self._context

    def _connection(self) -> urllib3.HTTPConnectionPool:
        """This tool's one kept-alive connection to the endpoint (urllib3, without the
        layers of ``requests``: a pass makes thousands of small calls, and those layers
        cost more than the call itself). Over HTTPS the proxy is the client certificate
        and the server is checked against ``ca_dir`` (else the system's CAs)."""
        if self._pool is None:
            url = urllib3.util.parse_url(self.endpoint)
            options: dict[str, Any] = {
                "maxsize": 1, "retries": False, "timeout": urllib3.Timeout(connect=self.timeout, read=self.timeout),
                "headers": {"Accept": "application/json", "User-Agent": "aso-fts3-tool"},
            }
            if self._tls:
                options.update(cert_file=self.proxy_path, key_file=self.proxy_path, cert_reqs="CERT_REQUIRED")
                if self.ca_dir and os.path.isdir(self.ca_dir):
                    options["ca_cert_dir"] = self.ca_dir
                elif self.ca_dir:
                    options["ca_certs"] = self.ca_dir
                self._pool = urllib3.HTTPSConnectionPool(url.host, url.port or 443, **options)
            else:
                self._pool = urllib3.HTTPConnectionPool(url.host, url.port or 80, **options)
            self._base_path = (url.path or "").rstrip("/")
        return self._pool

    def _call(self, method: str, path: str, what: str, body: Any = None) -> _Answer:
        """One call on this tool's own connection; submission, whoami and bulk status go
        this way rather than through the client's context. Answers the response whatever
        its status; an unreachable endpoint is transient."""
        headers = {"Content-Type": "application/json"} if body is not None else None
        pool = self._connection()
        try:
            resp = pool.request(method, self._base_path + path, body=None if body is None else json.dumps(body),
                                headers=headers)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise TransferToolError(f"{what}: cannot reach FTS at {self.endpoint}: {type(exc).__name__}: {exc}",
                                    transient=True) from None
        return _Answer(resp.status, resp.data)

    def whoami(self) -> dict:
        if self._whoami is None:
            what = f"whoami at {self.endpoint}"
            resp = self._call("GET", "/whoami", what)
            if resp.status_code != 200:
                raise _status_error(resp, what)
            try:
                self._whoami = resp.json()
            except ValueError:
                raise TransferToolError(f"{what}: not JSON: {resp.text[:200]!r}", transient=True) from None
        return self._whoami

    # -- the interface -----------------------------------------------------------------

    def delegate(self, lifetime: dt.timedelta, renew_below: dt.timedelta) -> str | None:
        who = self.whoami()
        if who.get("method") == "unauthenticated":
            return None  # a single-user service over plain HTTP takes no credentials
        from fts3.rest.client.delegator import Delegator

        try:
            Delegator(self.context).delegate(lifetime=lifetime, force=False, delegate_when_lifetime_lt=renew_below)
        except Exception as exc:
            raise _client_error(exc, f"delegation to {self.endpoint}") from None
        return who["delegation_id"]

    def expected_job_id(self, sid: str) -> str:
        who = self.whoami()
        base = uuid.UUID(who["base_id"])
        return str(uuid.uuid5(uuid.uuid5(base, who["vos"][0]), sid))

    def submission_body(self, transfers: Sequence[Transfer], options: JobOptions, sid: str, *,
                        multihop: bool = False) -> dict[str, Any]:
        files = []
        for t in transfers:
            entry: dict[str, Any] = {
                "sources": [t.source],
                "destinations": [t.destination],
                "checksum": f"ADLER32:{t.checksum}" if t.checksum else "ADLER32",
                "metadata": {**t.metadata, ROW_ID_KEY: t.id},
            }
            if t.filesize is not None:
                entry["filesize"] = t.filesize
            files.append(entry)
        params = {
            "verify_checksum": options.verify_checksum,
            "overwrite": options.overwrite,
            "retry": options.retry,
            "retry_delay": options.retry_delay,
            "max_time_in_queue": options.max_time_in_queue,
            "priority": options.priority,
            "job_metadata": options.metadata,
            "id_generator": "deterministic",
            "sid": sid,
        }
        # only for a tape source (or a stage-in): FTS3 stages a job that carries bring_online
        if options.bring_online > 0:
            params["bring_online"] = options.bring_online
        if options.copy_pin_lifetime > 0:
            params["copy_pin_lifetime"] = options.copy_pin_lifetime
        if multihop:  # the files are the hops, in order: FTS3 runs them one after the other
            params["multihop"] = True
            # The intermediate copies are aso's own (a scratch name per row): one an earlier
            # attempt left that no longer matches (a job retry rewrote the file) must be
            # replaced, not fail every attempt until it is cleaned up. A matching one is reused.
            params["overwrite_hop"] = True
        return {"files": files, "params": params}

    def submit(self, transfers: Sequence[Transfer], options: JobOptions, sid: str, *, multihop: bool = False) -> str:
        if not transfers:
            raise ValueError("nothing to submit")
        expected = self.expected_job_id(sid)
        what = f"submission to {self.endpoint}"
        resp = self._call("POST", "/jobs", what, self.submission_body(transfers, options, sid, multihop=multihop))
        if resp.status_code == 409:
            return expected  # submitted before (a rerun after a crash): same job, nothing new
        if resp.status_code not in (200, 201, 202):
            raise _status_error(resp, what)
        try:
            job_id = resp.json()["job_id"]
        except (ValueError, KeyError, TypeError):
            raise TransferToolError(f"{what}: no job id in the answer {resp.text[:200]!r}", transient=True) from None
        if job_id != expected:
            raise TransferToolError(f"FTS gave job id {job_id}, expected {expected} for sid {sid}", transient=False)
        return job_id

    def bulk_query(self, job_ids: Sequence[str]) -> dict[str, JobResult]:
        results: dict[str, JobResult] = {}
        ids = list(dict.fromkeys(job_ids))
        for i in range(0, len(ids), self.bulk_size):
            chunk = ids[i:i + self.bulk_size]
            path = ",".join(quote(job_id, safe="") for job_id in chunk)
            resp = self._call("GET", f"/jobs/{path}?files={','.join(STATUS_FILE_FIELDS)}",
                              f"status from {self.endpoint}")
            if resp.status_code == 404 and len(chunk) == 1:
                results[chunk[0]] = _lost(chunk[0], "404 Not Found")
                continue
            if resp.status_code not in (200, 207):
                raise TransferToolError(f"status from {self.endpoint}: HTTP {resp.status_code} {resp.text[:300]}",
                                        transient=resp.status_code >= 500, status=resp.status_code)
            try:
                body = resp.json()
            except ValueError:
                raise TransferToolError(f"status from {self.endpoint}: not JSON: {resp.text[:200]!r}",
                                        transient=True) from None
            for element in body if isinstance(body, list) else [body]:
                if not isinstance(element, dict):
                    raise TransferToolError(f"status from {self.endpoint}: a job's status is not an object: "
                                            f"{str(element)[:200]!r}", transient=True)
                job_id = element.get("job_id")
                if job_id not in chunk:
                    continue
                status = str(element.get("http_status", "200"))
                if not status.startswith("200"):
                    results[job_id] = _lost(job_id, status, element.get("http_message"))
                    continue
                results[job_id] = job_result(element)
        return results

    def cancel(self, job_id: str, file_ids: Sequence[int] | None = None) -> None:
        from fts3.rest.client.exceptions import NotFound

        if file_ids is not None:
            file_ids = list(file_ids)
            if not file_ids:
                return  # no file: cancel nothing (never the whole job, which ``DELETE /jobs/{id}`` does)
        path = f"/jobs/{job_id}" + (f"/files/{','.join(str(f) for f in file_ids)}" if file_ids is not None else "")
        try:
            self.context.delete(path)
        except NotFound:
            return  # FTS does not know the job: there is nothing left to cancel
        except Exception as exc:
            raise _client_error(exc, f"cancel {job_id} at {self.endpoint}") from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._context is not None:
            self._context._requester.session.close()


def job_result(element: dict[str, Any]) -> JobResult:
    """One job of an FTS3 status answer (``GET /jobs/{ids}?files=...``) as a
    :class:`JobResult`: one result per file, or, for a multihop job, one per row with its
    hops folded (:func:`fold_hops`)."""
    files = [f for f in element.get("files") or () if isinstance(f, dict)]
    multihop = element.get("job_type") == "H" or any(_hops(f) > 1 for f in files)
    results = fold_hops(files) if multihop else [_file_result(f) for f in files]
    return JobResult(element["job_id"], element["job_state"], element.get("reason"), tuple(results), multihop)


def fold_hops(files: Sequence[dict[str, Any]]) -> list[FileResult]:
    """The hops of a multihop job (FTS3 file dicts) as one result per row id.

    FINISHED when the last hop finished; FAILED or CANCELED with the reason of the first hop
    that ended so (FTS3 marks the hops after it FAILED "Unused hop in multi-hop": their
    reasons say nothing); else the state of the hop under way. The source is the first
    hop's, the destination the last hop's, and the file id that of the hop under way."""
    by_row: dict[str | None, list[dict[str, Any]]] = {}
    for f in files:
        by_row.setdefault(_metadata(f).get(ROW_ID_KEY), []).append(f)
    out = []
    for row_id, hops in by_row.items():
        hops = sorted(hops, key=lambda f: (_hop_index(f), f.get("file_index") or 0, f.get("file_id") or 0))
        first, last = hops[0], hops[-1]
        count = max(len(hops), _hops(first))
        failed = [f for f in hops if f.get("file_state") in ("FAILED", "CANCELED")]
        real = [f for f in failed if not (f.get("reason") or "").startswith(UNUSED_HOP_REASON)] or failed
        if real:
            hop = real[0]
            meta = _metadata(hop)
            state = hop["file_state"]
            reason = hop_reason(hop.get("reason"), _hop_index(hop), count, meta.get("src_site") or "",
                                meta.get("dst_site") or "")
        elif last.get("file_state") == "FINISHED":
            hop, state, reason = last, "FINISHED", None
        else:
            hop = next((f for f in hops if f.get("file_state") != "FINISHED"), last)
            state, reason = hop.get("file_state"), None
        out.append(FileResult(transfer_id=row_id, state=state, reason=reason, source=first.get("source_surl"),
                              destination=last.get("dest_surl"), file_id=hop.get("file_id")))
    return out


def _file_result(f: dict[str, Any]) -> FileResult:
    return FileResult(
        transfer_id=_metadata(f).get(ROW_ID_KEY),
        state=f.get("file_state"),
        reason=f.get("reason") or None,
        source=f.get("source_surl"),
        destination=f.get("dest_surl"),
        file_id=f.get("file_id"),
    )


def _metadata(f: dict[str, Any]) -> dict[str, Any]:
    meta = f.get("file_metadata")
    return meta if isinstance(meta, dict) else {}


def _int_or(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _hops(f: dict[str, Any]) -> int:
    return _int_or(_metadata(f).get(HOPS_KEY), 1)


def _hop_index(f: dict[str, Any]) -> int:
    """The hop's place in its path (1 first), from the metadata aso submits it with, else
    its FTS file index."""
    return _int_or(_metadata(f).get(HOP_KEY), _int_or(f.get("file_index"), 0) + 1)


def _lost(job_id: str, status: str, message: str | None = None) -> JobResult:
    return JobResult(job_id, "LOST", f"FTS does not know this job any more ({status}{': ' + message if message else ''})")
