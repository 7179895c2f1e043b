"""The in-process backend: the store, bound to this installation's worker name."""

from __future__ import annotations

from typing import Any

from aso import validate
from aso.state.backend import StateBackend
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
from aso.state.store import Store
from aso.topology.throttle import ThrottleCounts, ThrottleLimits


class LocalBackend(StateBackend):
    def __init__(self, url: str, *, worker: str, store: Store | None = None, **store_options: int):
        self.worker = validate.worker(worker)
        self.store = store or Store(url, **store_options)

    def inject(self, requests: list[dict[str, Any]]) -> InjectResult:
        return self.store.inject(requests)

    def get_transfers(self, ids: list[str]) -> list[dict[str, Any]]:
        return self.store.get_transfers(ids)

    def list_transfers(self, *, user=None, task=None, states=None, limit: int = 10000) -> list[dict[str, Any]]:
        return self.store.list_transfers(user=user, task=task, states=states, limit=limit)

    def statistics(self, *, user=None, task=None, request_type: str | None = None) -> list[dict[str, Any]]:
        return self.store.statistics(user=user, task=task, request_type=request_type)

    def active_users(self, *, request_type: str | None = None) -> list[str]:
        return self.store.active_users(worker=self.worker, request_type=request_type)

    def acquire_transfers(self, users: list[str], limit: int, limits: ThrottleLimits | None = None, *,
                          request_type: str | None = None, pinned_only: list[str] | None = None) -> int:
        return self.store.acquire_transfers(users, limit, worker=self.worker, limits=limits, request_type=request_type,
                                            pinned_only=pinned_only, generation=self.generation)

    def throttle_counts(self) -> ThrottleCounts:
        return self.store.throttle_counts()

    def acquired_transfers(self, user=None, limit: int = 10000, *, request_type: str | None = None) -> list[dict[str, Any]]:
        return self.store.acquired_transfers(user, limit, worker=self.worker, request_type=request_type)

    def update_transfers(self, updates: list[TransferUpdate]) -> UpdateResult:
        return self.store.update_transfers(updates, worker=self.worker, generation=self.generation)

    def retry_transfers(self, cooloff: int) -> int:
        return self.store.retry_transfers(cooloff, worker=self.worker, generation=self.generation)

    def stuck_transfers(self, states, older_than: int, limit: int = 10000) -> list[dict[str, Any]]:
        return self.store.stuck_transfers(states, older_than, limit, worker=self.worker)

    def release_transfers(self, ids: list[str]) -> int:
        return self.store.release_transfers(ids, worker=self.worker, generation=self.generation)

    def request_kill(self, *, task=None, ids=None) -> KillResult:
        return self.store.request_kill(task=task, ids=ids)

    def transfers_to_kill(self, limit: int = 5000) -> list[dict[str, Any]]:
        return self.store.transfers_to_kill(limit)

    def mark_killed(self, ids: list[str], reason: str | None = None) -> int:
        return self.store.mark_killed(ids, reason)

    def retry_failed(self, *, task=None, ids=None) -> int:
        return self.store.retry_failed(task=task, ids=ids)

    def acquire_publication(self) -> int:
        return self.store.acquire_publication(worker=self.worker, generation=self.generation)

    def acquired_publication(self, user=None, limit: int = 100000, *, after_user=None) -> list[dict[str, Any]]:
        return self.store.acquired_publication(user, limit, worker=self.worker, after_user=after_user)

    def update_publication(self, updates: list[PublicationUpdate]) -> UpdateResult:
        return self.store.update_publication(updates, worker=self.worker, generation=self.generation)

    def retry_publication(self, *, task=None, ids=None) -> int:
        return self.store.retry_publication(task=task, ids=ids)

    def get_task(self, task: str) -> dict[str, Any] | None:
        return self.store.get_task(task)

    def upsert_tasks(self, tasks: list[dict[str, Any]]) -> int:
        return self.store.upsert_tasks(tasks)

    def update_last_publication(self, task: str, when: int | None = None) -> None:
        self.store.update_last_publication(task, when)

    def put_file_metadata(self, entries: list[dict[str, Any]]) -> int:
        return self.store.put_file_metadata(entries)

    def get_file_metadata(self, lfns: list[str]) -> dict[str, dict[str, Any]]:
        return self.store.get_file_metadata(lfns)

    def record_pass(self, record: PassRecord) -> None:
        # the same checks as over REST: what one backend refuses, the other does too
        self.store.record_pass(PassRecord.from_params(record.to_params().get))

    def component_passes(self) -> list[PassRecord]:
        return self.store.component_passes()

    def _heartbeat(self, beat: Heartbeat) -> Membership:
        # the same checks as over REST
        return self.store.heartbeat(Heartbeat.from_params(beat.to_params().get), worker=self.worker)

    def instances(self, timeout: int) -> list[Instance]:
        return self.store.instances(timeout)

    def set_submission_ids(self, sids: dict[str, str]) -> int:
        return self.store.set_submission_ids(sids, worker=self.worker, generation=self.generation)

    def submitted_jobs(self, *, request_type: str | None = None) -> list[tuple[str, str, str]]:
        return self.store.submitted_jobs(worker=self.worker, request_type=request_type)

    def transfers_of_jobs(self, fts_ids: list[str]) -> list[dict[str, Any]]:
        return self.store.transfers_of_jobs(fts_ids, worker=self.worker)

    def close(self) -> None:
        self.store.close()
