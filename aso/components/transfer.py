"""``aso transfer``: acquire new transfers and submit them to FTS, one job per link chunk.

A pass: finish what a killed pass left half done (write-ahead records), acquire NEW rows
of the active users, then one thread per user: get the user's proxy, group the user's
acquired rows by link (source site, destination site), cut each link into chunks of at
most ``max_files_per_job``, and for each chunk:

1. write a write-ahead record (``submit/<user>/<sid>.json``) with a fresh submission id;
2. submit with ``id_generator: deterministic`` and that sid (a resubmission of the same
   chunk answers 409 and gives the same job id: nothing is submitted twice);
3. mark the rows SUBMITTED with the FTS job id and endpoint (guarded by ACQUIRED);
4. write the monitor entry (``monitor/<user>/<job_id>.json``);
5. remove the write-ahead record.

Killed anywhere in between, the next pass replays the record from step 2 on. A refused
submission marks the chunk RETRY (or FAILED past the maximum, CRAB's rule); an unreachable
FTS leaves the record and the rows ACQUIRED for the next pass, which resubmits the same sid.
A user without a usable proxy is skipped with a log line; their rows stay ACQUIRED.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from aso.components.pipeline import PipelineSettings, ToolCache, ToolFactory
from aso.errors import AsoError
from aso.state.backend import StateBackend, TransferUpdate
from aso.transfertools import Transfer, TransferToolError

log = logging.getLogger("aso.transfer")

SiteResolver = Callable[[str], Any]  # site name -> object with .pfn(lfn) and .fts


@dataclass
class TransferSummary:
    acquired: int = 0
    users: int = 0
    jobs: int = 0
    files: int = 0
    replayed: int = 0
    retry: int = 0
    failed: int = 0
    users_skipped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        skipped = f", {len(self.users_skipped)} user(s) skipped (no proxy)" if self.users_skipped else ""
        return (f"transfer: {self.acquired} acquired, {self.files} files submitted in {self.jobs} FTS jobs for "
                f"{self.users} user(s), {self.replayed} interrupted submission(s) completed, {self.retry} to retry, "
                f"{self.failed} failed{skipped}")


@dataclass
class _UserResult:
    jobs: int = 0
    files: int = 0
    retry: int = 0
    failed: int = 0
    skipped: bool = False
    errors: list[str] = field(default_factory=list)


def _transfer_of(row: dict, sites: SiteResolver) -> tuple[Transfer, str]:
    source, destination = sites(row["tm_source"]), sites(row["tm_destination"])
    transfer = Transfer(
        id=row["tm_id"],
        source=source.pfn(row["tm_source_lfn"]),
        destination=destination.pfn(row["tm_destination_lfn"]),
        filesize=row.get("tm_filesize"),
        checksum=row.get("tm_checksum") or None,
        metadata={"taskname": row["tm_taskname"], "src_site": row["tm_source"], "dst_site": row["tm_destination"]},
    )
    # FTS3 is chosen by the destination, as Rucio does (the destination storage runs the copy)
    return transfer, destination.fts


def _record(user: str, sid: str, endpoint: str, transfers: list[Transfer]) -> dict:
    return {"user": user, "sid": sid, "endpoint": endpoint, "created": int(time.time()),
            "transfers": [asdict(t) for t in transfers]}


class TransferPass:
    def __init__(self, backend: StateBackend, proxies, tools: ToolFactory, sites: SiteResolver, settings: PipelineSettings):
        self.backend = backend
        self.proxies = proxies
        self.tools = ToolCache(tools)
        self.sites = sites
        self.settings = settings
        self.submit_box = settings.sandbox("submit")
        self.monitor_box = settings.sandbox("monitor")

    # -- one chunk, from the write-ahead record on ----------------------------------------

    def _submit_record(self, record: dict, proxy: str) -> tuple[str, int]:
        """Steps 2-5 for one record; returns (job_id, files). Raises TransferToolError."""
        user, sid, endpoint = record["user"], record["sid"], record["endpoint"]
        transfers = [Transfer(**t) for t in record["transfers"]]
        tool = self.tools.delegated(endpoint, user, proxy, self.settings)
        job_id = tool.submit(transfers, self.settings.job_options, sid)
        result = self.backend.update_transfers([
            TransferUpdate(id=t.id, state="SUBMITTED", fts_id=job_id, fts_instance=endpoint, expect_state="ACQUIRED")
            for t in transfers
        ])
        for skip in result.skipped:
            if skip.get("state") not in ("SUBMITTED", "KILL"):
                log.info("row %s was %s when its FTS job %s was recorded; the monitor will ignore its result",
                         skip.get("id"), skip.get("state"), job_id)
        self.monitor_box.write(user, job_id, {
            "job_id": job_id, "user": user, "endpoint": endpoint, "submitted": int(time.time()),
            "files": {t.id: {"source": t.source, "destination": t.destination} for t in transfers},
            "reported": [], "batches": 0, "last_progress": int(time.time()),
        })
        self.submit_box.remove(user, sid)
        return job_id, len(transfers)

    def _refused(self, record: dict, rows_by_id: dict[str, dict], reason: str) -> tuple[int, int]:
        """A submission FTS refused: RETRY, or FAILED past the maximum (CRAB's rule)."""
        updates, retry, failed = [], 0, 0
        for t in record["transfers"]:
            row = rows_by_id.get(t["id"], {})
            count = int(row.get("tm_transfer_retry_count") or 0)
            limit = int(row.get("tm_transfer_max_retry_count") or self.settings.max_retry)
            give_up = count + 1 > limit or self.settings.is_permanent(reason)
            updates.append(TransferUpdate(id=t["id"], state="FAILED" if give_up else "RETRY",
                                          reason=self.settings.cut(f"submission refused: {reason}"), expect_state="ACQUIRED"))
            failed += give_up
            retry += not give_up
        self.backend.update_transfers(updates)
        self.submit_box.remove(record["user"], record["sid"])
        return retry, failed

    def _run_record(self, record: dict, proxy: str, rows_by_id: dict[str, dict], result: _UserResult) -> None:
        try:
            _, files = self._submit_record(record, proxy)
            result.jobs += 1
            result.files += files
        except TransferToolError as exc:
            if exc.transient:
                # Maybe it landed, maybe not: the record stays, and the next pass resubmits the
                # same sid (409 then means it had landed).
                result.errors.append(f"{record['user']}: FTS unreachable, chunk {record['sid']} kept for the next pass: {exc}")
                log.warning("%s", result.errors[-1])
            else:
                retry, failed = self._refused(record, rows_by_id, str(exc))
                result.retry += retry
                result.failed += failed
                log.warning("user %s: FTS refused chunk %s (%d files): %s", record["user"], record["sid"],
                            len(record["transfers"]), exc)

    # -- a pass -----------------------------------------------------------------------

    def _proxy(self, user: str) -> str | None:
        try:
            return str(self.proxies.get_proxy(user))
        except AsoError as exc:
            log.warning("user %s skipped: no usable proxy (%s); their transfers wait for the next pass", user, exc)
            return None

    def replay(self) -> int:
        """Finish submissions a killed pass left behind."""
        done = 0
        records: dict[str, list[dict]] = defaultdict(list)
        for entry in self.submit_box.entries():
            record = self.submit_box.load(entry)
            if record is not None:
                records[entry.user].append(record)
        for user, user_records in records.items():
            proxy = self._proxy(user)
            if proxy is None:
                continue
            ids = [t["id"] for r in user_records for t in r["transfers"]]
            rows_by_id = {r["tm_id"]: r for r in self.backend.get_transfers(ids)}
            for record in user_records:
                result = _UserResult()
                self._run_record(record, proxy, rows_by_id, result)
                done += result.jobs
        return done

    def pending_ids(self) -> set[str]:
        """Rows named in write-ahead records still on disk (not to be chunked again)."""
        ids: set[str] = set()
        for entry in self.submit_box.entries():
            record = self.submit_box.load(entry)
            if record:
                ids.update(t["id"] for t in record["transfers"])
        return ids

    def run_user(self, user: str, pending: set[str]) -> _UserResult:
        result = _UserResult()
        rows = [r for r in self.backend.acquired_transfers(user, self.settings.acquire_limit) if r["tm_id"] not in pending]
        if not rows:
            return result
        proxy = self._proxy(user)
        if proxy is None:
            result.skipped = True
            return result
        by_link: dict[tuple[str, str, str], list[Transfer]] = defaultdict(list)
        rows_by_id = {}
        bad: list[TransferUpdate] = []
        for row in rows:
            rows_by_id[row["tm_id"]] = row
            try:
                transfer, endpoint = _transfer_of(row, self.sites)
            except AsoError as exc:  # a site missing from the configuration
                bad.append(TransferUpdate(id=row["tm_id"], state="FAILED", reason=self.settings.cut(str(exc)),
                                          expect_state="ACQUIRED"))
                continue
            by_link[(row["tm_source"], row["tm_destination"], endpoint)].append(transfer)
        if bad:
            self.backend.update_transfers(bad)
            result.failed += len(bad)
        size = self.settings.max_files_per_job
        for (_, _, endpoint), transfers in sorted(by_link.items()):
            for i in range(0, len(transfers), size):
                chunk = transfers[i:i + size]
                record = _record(user, uuid.uuid4().hex, endpoint, chunk)
                self.submit_box.write(user, record["sid"], record)
                self._run_record(record, proxy, rows_by_id, result)
                if result.errors and result.errors[-1].startswith(f"{user}: FTS unreachable"):
                    return result  # the endpoint is down: the rest waits for the next pass
        return result

    def run(self, progress: Callable[[int, int], None] | None = None) -> TransferSummary:
        summary = TransferSummary()
        try:
            summary.replayed = self.replay()
            users = self.backend.active_users()
            summary.acquired = self.backend.acquire_transfers(users, self.settings.acquire_limit) if users else 0
            pending = self.pending_ids()
            users = sorted(set(users))
            if progress:
                progress(0, len(users))
            with ThreadPoolExecutor(max_workers=max(1, self.settings.transfer_threads)) as pool:
                futures = {u: pool.submit(self.run_user, u, pending) for u in users}
                for done, (user, future) in enumerate(futures.items(), 1):
                    try:
                        r = future.result()
                    except AsoError as exc:
                        summary.errors.append(f"{user}: {exc}")
                        log.error("user %s: %s", user, exc)
                        continue
                    summary.jobs += r.jobs
                    summary.files += r.files
                    summary.retry += r.retry
                    summary.failed += r.failed
                    summary.users += 1 if (r.jobs or r.retry or r.failed) else 0
                    summary.errors.extend(r.errors)
                    if r.skipped:
                        summary.users_skipped.append(user)
                    if progress:
                        progress(done, len(users))
        finally:
            self.tools.close()
        return summary


def run_transfer(backend: StateBackend, proxies, tools: ToolFactory, sites: SiteResolver, settings: PipelineSettings,
                 progress: Callable[[int, int], None] | None = None) -> TransferSummary:
    """One ``aso transfer`` pass."""
    return TransferPass(backend, proxies, tools, sites, settings).run(progress)
