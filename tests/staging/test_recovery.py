"""The retry manager recovers stuck stage-in rows as it does transfers: never while a stager
pass runs (its lock), never a row its write-ahead records (stage/) name."""

from __future__ import annotations

import time

from aso.components.handoffs import Chunk, SubmitRecord
from aso.components.pipeline import PipelineSettings
from aso.components.retry_manager import RetryManagerPass, RetryManagerSummary
from aso.locking import component_lock
from aso.state import open_backend
from aso.transfertools import Transfer
from tests.state.test_stagein_contract import stagein


def test_stuck_stageins_wait_for_the_stager_lock_and_its_records(tmp_path):
    backend = open_backend(f"sqlite:///{tmp_path / 'state.db'}", worker="w")
    backend.inject([stagein(i) for i in range(2)])
    assert backend.acquire_transfers(["alice"], 10, request_type="stagein") == 2
    named, loose = (r["tm_id"] for r in backend.acquired_transfers())
    settings = PipelineSettings(sandbox_root=tmp_path / "sandboxes", lock_dir=tmp_path / "locks", stuck_after=0)
    chunk = Chunk("sid", "https://fts", [Transfer(named, "file:///t/x", "file:///t/x")], "", 60, -1)
    settings.sandbox("stage").write_record("alice", "batch", SubmitRecord("alice", 1, [chunk]))
    manager = RetryManagerPass(backend, None, None, settings)
    time.sleep(1.1)  # stuck: last updated before this second

    with component_lock(settings.lock_dir, "stager"):  # a stager pass is running
        summary = RetryManagerSummary()
        manager.recover(summary)
        assert summary.released == 0
    summary = RetryManagerSummary()
    manager.recover(summary)
    assert summary.released == 1
    states = {r["tm_id"]: r["tm_transfer_state"] for r in backend.get_transfers([named, loose])}
    assert states == {named: "ACQUIRED", loose: "NEW"}
    backend.close()
