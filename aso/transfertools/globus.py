"""Globus through globus-sdk's TransferClient, as a confidential app (client credentials).

One link chunk is one Globus transfer task between two collections. What differs from
Rucio's Globus tool (docs/globus.md):

- **No double submission.** A task is labelled ``aso-<sid>`` (:func:`task_label`). Before
  submitting, the tool looks for a task with that label (``task_list``): a chunk replayed
  after a crash finds the task its first attempt created. The Transfer API wants its
  ``submission_id`` fetched from ``GET /submission_id`` (client-made ids are not documented),
  so one is fetched per submission and kept for the retries of that POST, which Globus then
  answers with the first task (its duplicate-submission guard).
- **Bulk status.** The task documents of up to ``bulk_size`` tasks come from one
  ``task_list`` request filtered by task id; only a task that ended costs more: its
  successful transfers (marker-paged), its skipped errors (per-file reasons: tasks are
  submitted with ``skip_source_errors``) and, when it failed, its last error events.
- **Row ids without a local record.** A row id is the sha224 of the source LFN (CRAB's
  rule, enforced at injection); the LFN is the Globus source path below the source site's
  prefix (:class:`CollectionMap`).
- **Cancel.** ``cancel_task`` cancels a whole task; Globus cannot cancel some files of a task.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import stat
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from aso.errors import ConfigError
from aso.transfertools import GLOBUS_PREFIX
from aso.transfertools.base import (
    FileResult,
    JobOptions,
    JobResult,
    Transfer,
    TransferTool,
    TransferToolError,
)
from aso.validate import lfn_id

log = logging.getLogger("aso.globus")

LABEL_PREFIX = "aso-"
#: the Transfer API's version path: the SDK adds it to every request itself
API_VERSION = "/v0.10"
#: Globus task states -> the interface's job states (FTS3's names)
TASK_STATES = {"ACTIVE": "ACTIVE", "INACTIVE": "ACTIVE", "SUCCEEDED": "FINISHED", "FAILED": "FAILED"}


def task_label(sid: str) -> str:
    """The label of the task a chunk with submission id ``sid`` becomes: the same for every
    attempt, so a resubmission finds the task an earlier attempt created. Globus allows
    letters, digits, space, '-', '_' and ',' in labels, at most 128 characters."""
    label = LABEL_PREFIX + sid
    if len(label) > 128 or not all(c.isascii() and (c.isalnum() or c in "-_") for c in sid):
        raise ValueError(f"submission id {sid!r} cannot make a Globus task label")
    return label


def retry_delay(attempt: int, retry_after: float | None, backoff: float, cap: float) -> float:
    """Seconds to wait before retry ``attempt`` (0 first): a 429's Retry-After when given,
    else ``backoff`` doubled per attempt; never more than ``cap``."""
    wanted = retry_after if retry_after is not None else backoff * (2 ** attempt)
    return max(0.0, min(float(wanted), cap))


def job_state(task: dict[str, Any]) -> tuple[str, str | None]:
    """A Globus task document's state in the interface's words, with a reason: ACTIVE and
    INACTIVE (waiting for an intervention, e.g. an expired credential at a collection) are
    unfinished; SUCCEEDED is FINISHED (FINISHEDDIRTY when files were skipped on errors);
    FAILED is FAILED, or CANCELED when it was canceled."""
    status = task.get("status")
    state = TASK_STATES.get(status, "ACTIVE")
    fatal = task.get("fatal_error") if isinstance(task.get("fatal_error"), dict) else None
    reason = None
    if fatal:
        reason = f"Globus task {status}: {fatal.get('code')}: {fatal.get('description')}"
        if fatal.get("code") == "CANCELED":
            state = "CANCELED"
    elif status == "INACTIVE":
        reason = f"Globus task INACTIVE: {task.get('nice_status') or 'waiting for an intervention'}"
    elif status == "FAILED":
        reason = "Globus task FAILED"
    if state == "FINISHED" and (task.get("subtasks_skipped_errors") or 0) > 0:
        state = "FINISHEDDIRTY"
    return state, reason


@dataclass(frozen=True)
class GlobusSite:
    name: str
    prefix: str
    collection: str

    @property
    def base_path(self) -> str:
        """The prefix's path: where the site's LFNs start within its collection."""
        return unquote(urlsplit(self.prefix).path).rstrip("/")


class CollectionMap:
    """Storage URLs <-> (Globus collection, path), from the sites that have a collection.

    A site's URL for an LFN is ``prefix + LFN`` (what the transfer pass builds); its Globus
    path is that URL's path, as a collection's HTTPS URL maps onto its paths, so a site
    ``prefix = "https://g-1234.data.globus.org/cms"`` puts LFN ``/store/x`` at ``/cms/store/x``."""

    def __init__(self, sites: Iterable[GlobusSite]):
        self.sites = sorted(sites, key=lambda s: len(s.prefix), reverse=True)  # longest prefix first

    @classmethod
    def from_config(cls, config) -> CollectionMap:
        return cls(GlobusSite(s.name, s.prefix, s.globus_collection) for s in config.sites.values()
                   if getattr(s, "globus_collection", ""))

    def locate(self, url: str) -> tuple[str, str]:
        """(collection id, path) of a storage URL; TransferToolError (not transient: the
        configuration must change) when no Globus site's prefix holds it."""
        for site in self.sites:
            base = site.prefix.rstrip("/")
            if url.startswith(base + "/"):
                return site.collection, unquote(urlsplit(url).path)
        raise TransferToolError(f"{url} is under no site with a globus_collection", transient=False)

    def url(self, collection: str, path: str) -> str | None:
        """The storage URL of a Globus path (None when no site has that collection and a
        prefix holding the path)."""
        site = self._site_of(collection, path)
        if site is None:
            return None
        parts = urlsplit(site.prefix)
        return f"{parts.scheme}://{parts.netloc}{quote(path)}"

    def row_id(self, collection: str, path: str) -> str | None:
        """The row id of the file at a Globus source path: sha224 of its LFN (the path below
        the site's prefix)."""
        site = self._site_of(collection, path)
        if site is None:
            return None
        return lfn_id(path[len(site.base_path):])

    def _site_of(self, collection: str, path: str) -> GlobusSite | None:
        for site in self.sites:
            if site.collection == collection and path.startswith(site.base_path + "/"):
                return site
        return None


@dataclass(frozen=True)
class GlobusSettings:
    client_id: str
    client_secret_file: str
    auth_url: str = "https://auth.globus.org"
    sync_level: str = ""
    deadline_hours: int = 24
    bulk_size: int = 100
    max_retries: int = 5
    backoff: float = 1.0
    max_backoff: float = 60.0

    @classmethod
    def from_config(cls, config) -> GlobusSettings:
        g = config.values["globus"]
        return cls(g["client_id"], g["client_secret_file"], g["auth_url"], g["sync_level"], g["deadline_hours"],
                   g["bulk_size"], g["max_retries"], g["backoff"], g["max_backoff"])

    def secret(self) -> str:
        """The client secret, from a file only its owner may read (as ssh treats keys)."""
        where = "globus.client_secret_file"
        if not self.client_id or not self.client_secret_file:
            raise ConfigError("globus.client_id and globus.client_secret_file are needed to use Globus")
        try:
            st = os.stat(self.client_secret_file)
            if not stat.S_ISREG(st.st_mode):
                raise ConfigError(f"{where}: {self.client_secret_file} is not a file")
            if st.st_mode & 0o077:
                raise ConfigError(f"{where}: {self.client_secret_file} may be read by others (mode "
                                  f"{stat.S_IMODE(st.st_mode):04o}); chmod 600 it")
            with open(self.client_secret_file, encoding="utf-8") as f:
                secret = f.read().strip()
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read {self.client_secret_file}: {exc.strerror or exc}") from None
        if not secret:
            raise ConfigError(f"{where}: {self.client_secret_file} is empty")
        return secret


class GlobusContext:
    """What every Globus tool of a process shares: the settings, the sites' collections,
    and one client-credentials token (fetched when first needed, fetched again when it
    expires or a request is answered 401)."""

    def __init__(self, settings: GlobusSettings, collections: CollectionMap):
        self.settings = settings
        self.collections = collections
        self._authorizer = None
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config) -> GlobusContext:
        return cls(GlobusSettings.from_config(config), CollectionMap.from_config(config))

    def retry_config(self) -> Any:
        from globus_sdk.transport import RetryConfig

        s = self.settings

        def backoff(ctx) -> float:
            # ctx.backoff holds a 429's Retry-After when the SDK found one
            return retry_delay(ctx.attempt, ctx.backoff, s.backoff, s.max_backoff)

        return RetryConfig(max_retries=s.max_retries, max_sleep=s.max_backoff, backoff=backoff)

    def authorizer(self) -> Any:
        with self._lock:
            if self._authorizer is None:
                import globus_sdk

                auth = globus_sdk.ConfidentialAppAuthClient(self.settings.client_id, self.settings.secret(),
                                                            base_url=self.settings.auth_url,
                                                            retry_config=self.retry_config())
                self._authorizer = globus_sdk.ClientCredentialsAuthorizer(auth, globus_sdk.TransferClient.scopes.all)
            return self._authorizer


def _api_error(exc: Exception, what: str) -> TransferToolError:
    """A failed SDK call as a TransferToolError: refusals (4xx) are not transient; 429 and
    5xx (after the SDK's bounded retries), network errors and token failures are."""
    import globus_sdk

    if isinstance(exc, globus_sdk.GlobusAPIError):
        status = exc.http_status
        transient = status in (401, 408, 429) or status >= 500
        return TransferToolError(f"{what}: HTTP {status} {exc.code}: {exc.message}", transient=transient, status=status)
    return TransferToolError(f"{what}: {type(exc).__name__}: {exc}", transient=True)


class GlobusTool(TransferTool):
    name = "globus"

    def __init__(self, endpoint: str, context: GlobusContext):
        if not endpoint.startswith(GLOBUS_PREFIX):
            raise ValueError(f"{endpoint!r} is not a Globus endpoint ({GLOBUS_PREFIX}<Transfer API URL>)")
        self.endpoint = endpoint
        self.context = context
        self.settings = context.settings
        self.collections = context.collections
        url = endpoint[len(GLOBUS_PREFIX):].rstrip("/")
        # the SDK puts /v0.10 in front of every path itself
        self.base_url = url[:-len(API_VERSION)] if url.endswith(API_VERSION) else url
        self._client = None

    @property
    def client(self) -> Any:
        if self._client is None:
            import globus_sdk

            try:
                authorizer = self.context.authorizer()
            except ConfigError as exc:
                # a missing or unsafe secret is this host's fault, not the files': their
                # chunks wait (as for an unreachable service) instead of spending retries
                raise TransferToolError(str(exc), transient=True) from None
            self._client = globus_sdk.TransferClient(base_url=self.base_url + "/", authorizer=authorizer,
                                                     app_name="aso", retry_config=self.context.retry_config())
        return self._client

    def _call(self, what: str, fn: Callable[..., Any], *args, **kwargs) -> Any:
        import globus_sdk

        try:
            return fn(*args, **kwargs)
        except TransferToolError:
            raise
        except (globus_sdk.GlobusError, OSError, ValueError) as exc:
            raise _api_error(exc, f"{what} at {self.endpoint}") from None
        except Exception as exc:  # requests' own errors (the SDK lets network failures through)
            import requests

            if isinstance(exc, requests.RequestException):
                raise _api_error(exc, f"{what} at {self.endpoint}") from None
            raise

    # -- the interface -------------------------------------------------------------------

    def delegate(self, lifetime: dt.timedelta, renew_below: dt.timedelta) -> str | None:
        return None  # Globus acts with the app's own token: there is no user proxy to delegate

    def find_task(self, label: str) -> str | None:
        """The id of the transfer task labelled ``label`` (the newest if several), or None."""
        page = self._call("task lookup", self.client.task_list, filter={"label": label, "type": "TRANSFER"},
                          orderby="request_time DESC", limit=10)
        for task in page:
            if task.get("label") == label:
                return task["task_id"]
        return None

    def expected_job_id(self, sid: str) -> str:
        """The task a chunk went to when an earlier attempt submitted it; else its label
        (Globus gives a task id only at submission), which :meth:`bulk_query` resolves."""
        label = task_label(sid)
        return self.find_task(label) or label

    def submit(self, transfers: Sequence[Transfer], options: JobOptions, sid: str, *, multihop: bool = False) -> str:
        import globus_sdk

        if not transfers:
            raise ValueError("nothing to submit")
        if multihop:
            raise TransferToolError("Globus runs no multi-hop paths: a Globus link can only be a direct one",
                                    transient=False)
        pairs = [(self.collections.locate(t.source), self.collections.locate(t.destination)) for t in transfers]
        ends = {(src[0], dst[0]) for src, dst in pairs}
        if len(ends) != 1:
            raise TransferToolError("a Globus task joins one pair of collections; this chunk names "
                                    f"{len(ends)} pairs", transient=False)
        (source, destination), = ends
        label = task_label(sid)
        known = self.find_task(label)
        if known is not None:
            log.info("Globus task %s (%s) was submitted before: not submitted again", known, label)
            return known
        submission_id = self._call("submission id", self.client.get_submission_id)["value"]
        deadline = ((dt.datetime.now(dt.UTC) + dt.timedelta(hours=self.settings.deadline_hours))
                    .isoformat(timespec="seconds") if self.settings.deadline_hours else globus_sdk.MISSING)
        data = globus_sdk.TransferData(
            source, destination, label=label, submission_id=submission_id,
            sync_level=self.settings.sync_level or globus_sdk.MISSING,
            verify_checksum=options.verify_checksum != "none", deadline=deadline,
            # a missing or unreadable source fails its file only (listed in skipped_errors)
            skip_source_errors=True, fail_on_quota_errors=True,
            notify_on_succeeded=False, notify_on_failed=False, notify_on_inactive=False)
        for (_, src_path), (_, dst_path) in pairs:
            data.add_item(src_path, dst_path)
        # The SDK retries this POST (5xx, 429, no answer) with the same submission_id: Globus
        # then answers with the task the first one created instead of making another.
        answer = self._call("submission", self.client.submit_transfer, data)
        return answer["task_id"]

    def bulk_query(self, job_ids: Sequence[str]) -> dict[str, JobResult]:
        results: dict[str, JobResult] = {}
        ids = list(dict.fromkeys(job_ids))
        by_task: dict[str, str] = {}  # Globus task id -> the job id asked for
        for job_id in ids:
            if _is_uuid(job_id):
                by_task[job_id] = job_id
                continue
            # a label: the job id of a chunk that had no task yet when it was recorded
            task_id = self.find_task(job_id) if job_id.startswith(LABEL_PREFIX) else None
            if task_id is None:
                results[job_id] = _lost(job_id, "no Globus task has this label")
            else:
                by_task[task_id] = job_id
        tasks = list(by_task)
        size = self.settings.bulk_size
        for i in range(0, len(tasks), size):
            chunk = tasks[i:i + size]
            page = self._call("task status", self.client.task_list, filter={"task_id": chunk}, limit=len(chunk))
            found = {task["task_id"]: task for task in page}
            for task_id in chunk:
                job_id = by_task[task_id]
                task = found.get(task_id)
                results[job_id] = (_lost(job_id, "Globus does not know this task") if task is None
                                   else self._result(job_id, task))
        return results

    def _result(self, job_id: str, task: dict[str, Any]) -> JobResult:
        state, reason = job_state(task)
        if task.get("status") not in ("SUCCEEDED", "FAILED"):
            return JobResult(job_id, state, reason)  # per-file detail only once the task has ended
        task_id = task["task_id"]
        src, dst = task.get("source_endpoint_id"), task.get("destination_endpoint_id")
        files: dict[str | None, FileResult] = {}
        for item in self._paged("successful transfers", self.client.paginated.task_successful_transfers, task_id):
            f = self._file(src, dst, item, "FINISHED", None)
            files[f.transfer_id or f.destination] = f
        if (task.get("subtasks_skipped_errors") or 0) > 0:
            for item in self._paged("skipped errors", self.client.paginated.task_skipped_errors, task_id):
                why = " ".join(str(x) for x in (item.get("error_code"), item.get("error_details")) if x)
                f = self._file(src, dst, item, "FAILED", f"Globus skipped the file: {why or 'error'}")
                files[f.transfer_id or f.destination] = f
        if task.get("status") == "FAILED":
            reason = self._failure(task_id, reason)
        # a task that succeeded moved (or, with a sync_level, found in place) every file it
        # does not list as skipped on error
        unlisted = "FINISHED" if task.get("status") == "SUCCEEDED" else None
        return JobResult(job_id, state, reason, tuple(files.values()), unlisted=unlisted)

    def _failure(self, task_id: str, reason: str | None) -> str | None:
        """The task's fatal error, with the details of its last error event (the event list
        says what the fatal error does not: the storage's own message)."""
        events = self._call("event list", self.client.task_event_list, task_id, limit=1,
                            query_params={"filter": "is_error:1"})
        for event in events:
            detail = " ".join(str(x) for x in (event.get("description"), event.get("details")) if x)
            if detail:
                return f"{reason}; last error: {detail}" if reason else f"Globus task FAILED: {detail}"
        return reason

    def _paged(self, what: str, paginated, task_id: str) -> list[dict[str, Any]]:
        return list(self._call(what, lambda: list(paginated(task_id).items())))

    def _file(self, src: str | None, dst: str | None, item: dict[str, Any], state: str, reason: str | None) -> FileResult:
        source_path, destination_path = item.get("source_path") or "", item.get("destination_path") or ""
        return FileResult(transfer_id=self.collections.row_id(src or "", source_path), state=state, reason=reason,
                          source=self.collections.url(src or "", source_path),
                          destination=self.collections.url(dst or "", destination_path))

    def cancel(self, job_id: str, file_ids: Sequence[int] | None = None) -> None:
        import globus_sdk

        if file_ids is not None:
            if not list(file_ids):
                return  # no file: cancel nothing
            raise TransferToolError("Globus cancels whole tasks only, not some of their files", transient=False)
        task_id = job_id if _is_uuid(job_id) else self.find_task(job_id)
        if task_id is None:
            return  # never submitted: nothing to cancel
        try:
            self.client.cancel_task(task_id)
        except globus_sdk.GlobusAPIError as exc:
            if exc.http_status == 404:
                return  # Globus does not know the task: there is nothing left to cancel
            raise _api_error(exc, f"cancel {task_id} at {self.endpoint}") from None
        except Exception as exc:
            raise _api_error(exc, f"cancel {task_id} at {self.endpoint}") from None

    def close(self) -> None:
        self._client = None


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _lost(job_id: str, why: str) -> JobResult:
    return JobResult(job_id, "LOST", f"Globus task unknown: {why}")
