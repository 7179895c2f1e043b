"""The one interface every component uses to read and change transfer state.

Two implementations: ``local`` (the store in process, for database URLs) and ``rest``
(an ``aso server`` over HTTP, for http(s) URLs). A component cannot tell which it has;
:mod:`aso.state.factory` picks one. The types its calls take and answer are in
:mod:`aso.state.records`.

Conventions:
- Rows are dicts keyed by CRAB's column names (``tm_id``, ``tm_username``, ...); states in
  rows are names (``"NEW"``), times are epoch seconds (int).
- Every operation takes and returns lists and is one statement (or ``executemany``) per
  batch in the store, one request per batch over REST.
- A backend is bound to one worker name (CRAB's ``asoworker``): acquire/update/retry act
  only for that worker.
- Errors: :class:`aso.errors.ValidationError` (bad input, nothing written),
  :class:`aso.errors.TransitionError` (a disallowed state change; the whole call is refused),
  :class:`aso.errors.ForbiddenError`, :class:`aso.errors.BackendUnavailable`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from aso.state.records import (
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
from aso.state.states import TransferState
from aso.topology.throttle import ThrottleCounts, ThrottleLimits


class StateBackend(ABC):
    worker: str
    #: the fencing generation the last heartbeat answered (None: no heartbeat, no check);
    #: the pipeline writes (acquire, update, retry, release, publication) carry it, and the
    #: store refuses them with FencedError once another worker took this one over
    generation: int | None = None
    #: the last heartbeat's answer (None: no heartbeat yet, or it failed)
    membership: Membership | None = None
    #: the last heartbeat failed: this instance does not know its share
    heartbeat_failed: bool = False

    # -- injection and user-facing reads -------------------------------------------------
    @abstractmethod
    def inject(self, requests: list[dict[str, Any]]) -> InjectResult:
        """Insert transfer requests (CRAB's fileusertransfers PUT fields: username, taskname,
        source, destination, source_lfn, destination_lfn, filesize, checksum (adler32),
        publish, job_id, job_retry_count, type, start_time; optional transfer_state NEW|DONE,
        max_retry). Validated as a whole first; any bad request → ValidationError, nothing
        written. Row id = sha224(source_lfn). Re-injection: a row in flight is skipped; a
        finished row with a different (job_retry_count, start_time) is re-initialised; the
        same job retry is skipped. Tasks are created on first sight."""

    @abstractmethod
    def get_transfers(self, ids: list[str]) -> list[dict[str, Any]]:
        """Rows by id (unknown ids are simply absent)."""

    @abstractmethod
    def list_transfers(
        self,
        *,
        user: str | None = None,
        task: str | None = None,
        states: list[TransferState | str] | None = None,
        limit: int = 10000,
    ) -> list[dict[str, Any]]:
        """Rows filtered by user, task and transfer states, oldest first."""

    @abstractmethod
    def statistics(self, *, user: str | None = None, task: str | None = None,
                   request_type: str | None = None) -> list[dict[str, Any]]:
        """Counts: [{"username", "taskname", "transfer_state", "publication_state", "count"}]
        (with ``request_type``, of rows of that kind only, as :meth:`active_users`)."""

    # -- the transfer pipeline -----------------------------------------------------------
    @abstractmethod
    def active_users(self, *, request_type: str | None = None) -> list[str]:
        """Users with NEW rows nobody owns, or ACQUIRED rows owned by this worker; with
        ``request_type``, counting only rows of that kind ('transfer': output and log rows,
        what aso transfer submits; 'stagein': stage-in rows, aso stager's)."""

    @abstractmethod
    def acquire_transfers(self, users: list[str], limit: int, limits: ThrottleLimits | None = None, *,
                          request_type: str | None = None, pinned_only: list[str] | None = None) -> int:
        """NEW rows with no worker → ACQUIRED by this worker, at most ``limit`` per user,
        oldest first. Safe against concurrent acquirers (no row is acquired twice).
        With ``limits``, only as many rows per (user, source, destination) as the sites and
        links have room for, counting every worker's files in flight (ACQUIRED, SUBMITTED),
        shared fairly between users (:func:`aso.topology.throttle.allocate`); the oldest of
        each group first. Returns the number acquired (an :class:`~aso.state.records.Acquired`
        whose ``held`` counts the rows left waiting on a full site or link). With
        ``request_type``, only rows of that kind (as :meth:`active_users`). Of the users of
        ``pinned_only`` (other workers' shares, :mod:`aso.state.shares`) only the rows pinned
        to this worker by name are taken."""

    @abstractmethod
    def throttle_counts(self) -> ThrottleCounts:
        """Rows in flight (ACQUIRED, SUBMITTED) and waiting (NEW) per (user, source,
        destination), every worker's: what throttling reckons with (status)."""

    @abstractmethod
    def acquired_transfers(self, user: str | None = None, limit: int = 10000, *,
                           request_type: str | None = None) -> list[dict[str, Any]]:
        """ACQUIRED rows of this worker (optionally one user; with ``request_type``, of that
        kind only, as :meth:`active_users`), at most ``limit`` (exact)."""

    @abstractmethod
    def update_transfers(self, updates: list[TransferUpdate]) -> UpdateResult:
        """Apply state changes in one batch. Sets tm_last_update; sets tm_end_time on
        DONE/FAILED/KILLED; keeps fts id/instance when not given; adds retry_increment.
        Marking SUBMITTED a row that is now KILL records the fts id and keeps KILL, so the
        retry manager can cancel it. All-or-nothing on TransitionError."""

    @abstractmethod
    def retry_transfers(self, cooloff: int) -> int:
        """RETRY rows of this worker last updated more than ``cooloff`` s ago → NEW, worker
        cleared, retry count +1. Returns how many."""

    @abstractmethod
    def stuck_transfers(self, states: list[TransferState | str], older_than: int, limit: int = 10000) -> list[dict[str, Any]]:
        """Rows of this worker in ``states`` not updated for ``older_than`` seconds."""

    @abstractmethod
    def release_transfers(self, ids: list[str]) -> int:
        """ACQUIRED rows of this worker → NEW with the worker cleared (recovery of rows a
        dead submitter acquired but never submitted)."""

    @abstractmethod
    def request_kill(self, *, task: str | None = None, ids: list[str] | None = None) -> KillResult:
        """Rows in flight (NEW, ACQUIRED, SUBMITTED, RETRY) → KILL. Exactly one of task/ids.
        Over REST as a user, only the caller's own rows."""

    @abstractmethod
    def transfers_to_kill(self, limit: int = 5000) -> list[dict[str, Any]]:
        """Rows in KILL (any worker or none), oldest first."""

    @abstractmethod
    def mark_killed(self, ids: list[str], reason: str | None = None) -> int:
        """KILL rows → KILLED."""

    @abstractmethod
    def retry_failed(self, *, task: str | None = None, ids: list[str] | None = None) -> int:
        """Operator: FAILED (and KILLED) rows → NEW, worker cleared, retry count reset."""

    # -- publication ---------------------------------------------------------------------
    @abstractmethod
    def acquire_publication(self) -> int:
        """Publication NEW/RETRY → ACQUIRED for this worker, only where the transfer is DONE
        and tm_publish = 1, and only rows owned by this worker (never steals NULL-worker
        rows of another publisher: CRAB #5835)."""

    @abstractmethod
    def acquired_publication(self, user: str | None = None, limit: int = 100000, *,
                             after_user: str | None = None) -> list[dict[str, Any]]:
        """Publication ACQUIRED rows of this worker whose transfer is DONE, by user, task and
        end time, at most ``limit``; with ``after_user``, only users that sort after it (the
        next page of a pass that reads its rows a few users at a time)."""

    @abstractmethod
    def update_publication(self, updates: list[PublicationUpdate]) -> UpdateResult:
        """Publication state changes in one batch (transitions enforced, all-or-nothing)."""

    @abstractmethod
    def retry_publication(self, *, task: str | None = None, ids: list[str] | None = None) -> int:
        """Operator: publication FAILED → NEW, retry count reset."""

    # -- tasks and file metadata ---------------------------------------------------------
    @abstractmethod
    def get_task(self, task: str) -> dict[str, Any] | None:
        """{"tm_taskname", "tm_username", "tm_task_status", "tm_last_publication",
        "tm_publish_name" (output dataset), "tm_publish_dbs_url", "tm_creation_time"}."""

    @abstractmethod
    def upsert_tasks(self, tasks: list[dict[str, Any]]) -> int:
        """Create or update tasks (keys as in get_task; tm_taskname and tm_username required)."""

    @abstractmethod
    def update_last_publication(self, task: str, when: int | None = None) -> None:
        """Record the task's last publication time (epoch s; now when None)."""

    @abstractmethod
    def put_file_metadata(self, entries: list[dict[str, Any]]) -> int:
        """[{"lfn", "taskname", "metadata": {...}}]; replaces existing entries per LFN."""

    @abstractmethod
    def get_file_metadata(self, lfns: list[str]) -> dict[str, dict[str, Any]]:
        """LFN → metadata document, for the LFNs that have one."""

    # -- component passes ----------------------------------------------------------------
    @abstractmethod
    def record_pass(self, record: PassRecord) -> None:
        """A component instance's pass starting or ending (service role over REST)."""

    @abstractmethod
    def component_passes(self) -> list[PassRecord]:
        """Every component instance's latest pass (service and operator roles)."""

    # -- several hosts -------------------------------------------------------------------
    def heartbeat(self, beat: Heartbeat) -> Membership:
        """Say this worker's instance ``beat`` is alive (service role over REST); in the
        same transaction the store takes over every worker silent for longer than
        ``beat.timeout``. Remembers the answer (:attr:`membership`) and its generation,
        which this backend's pipeline writes carry from then on."""
        try:
            membership = self._heartbeat(beat)
        except Exception:
            self.membership, self.heartbeat_failed = None, True
            raise
        self.membership, self.generation, self.heartbeat_failed = membership, membership.generation, False
        return membership

    def share(self, users: list[str]) -> tuple[list[str], list[str]]:
        """(users whose new work this worker takes, the others) by the last heartbeat's
        live workers (:func:`aso.state.shares.mine`): everyone when it never heartbeat (a
        single host, a library caller), nobody when its last heartbeat failed."""
        from aso.state.shares import mine

        if self.heartbeat_failed:
            return [], list(users)
        return mine(users, self.worker, None if self.membership is None else self.membership.live)

    @abstractmethod
    def _heartbeat(self, beat: Heartbeat) -> Membership:
        """The store's answer to ``beat`` (see :meth:`heartbeat`)."""

    @abstractmethod
    def instances(self, timeout: int) -> list[Instance]:
        """Every component instance's last heartbeat, live if heard from within ``timeout``
        seconds, with its worker's generation and state (service and operator roles)."""

    @abstractmethod
    def set_submission_ids(self, sids: dict[str, str]) -> int:
        """Row id → the submission id (FTS sid) of the chunk it was planned into, recorded
        before the chunk is submitted, on rows ACQUIRED by this worker (fenced). Returns how
        many rows took it."""

    @abstractmethod
    def submitted_jobs(self, *, request_type: str | None = None) -> list[tuple[str, str, str]]:
        """(user, FTS job id, FTS endpoint) of the jobs holding this worker's SUBMITTED (or
        KILL) rows: what its monitor should be following."""

    @abstractmethod
    def transfers_of_jobs(self, fts_ids: list[str]) -> list[dict[str, Any]]:
        """This worker's SUBMITTED (or KILL) rows in the FTS jobs ``fts_ids``."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
