"""A stage-in submission a killed stager pass left in ``stage/`` is replayed by the next
stager pass, with the staging parameters the chunk was cut with, and never by a transfer
pass. FTS is a recording transfer tool (the interface, not a patched component); the state
backend is the real local store."""

from __future__ import annotations

from aso.components.handoffs import Chunk, SubmitRecord
from aso.components.pipeline import PipelineSettings
from aso.components.transfer import TransferPass
from aso.config import from_dict
from aso.state import open_backend
from aso.transfertools import JobResult, Transfer, TransferTool
from tests.state.test_stagein_contract import TAPE, stagein

_submitted: list[tuple[str, int, int, list[str]]] = []


class _Recording(TransferTool):
    name = "recording"

    def __init__(self, endpoint: str, proxy: str):
        self.endpoint = endpoint

    def delegate(self, lifetime, renew_below):
        return None

    def expected_job_id(self, sid):
        return f"job-{sid}"

    def submit(self, transfers, options, sid, *, multihop=False):
        _submitted.append((sid, options.bring_online, options.copy_pin_lifetime, [t.id for t in transfers]))
        return f"job-{sid}"

    def bulk_query(self, job_ids):
        return {j: JobResult(j, "STAGING", None) for j in job_ids}

    def cancel(self, job_id, file_ids=None):
        pass


class _Proxies:
    def get_proxy(self, user):
        return f"/proxies/{user}.pem"


def test_a_left_stagein_record_is_replayed_by_the_stager_only(tmp_path):
    _submitted.clear()
    topology = from_dict({"sites": {TAPE: {"prefix": "file:///tape", "fts": "https://fts", "tape": True}}}).topology()
    backend = open_backend(f"sqlite:///{tmp_path / 'state.db'}", worker="w")
    backend.inject([stagein(i) for i in range(2)])
    assert backend.acquire_transfers(["alice"], 10, request_type="stagein") == 2
    ids = [r["tm_id"] for r in backend.acquired_transfers()]
    settings = PipelineSettings(sandbox_root=tmp_path / "sandboxes")
    # what a stager killed between its write-ahead record and its submission leaves
    chunk = Chunk("sid1", "https://fts", [Transfer(i, "file:///tape/x", "file:///tape/x") for i in ids], "", 3600, 600)
    settings.sandbox("stage").write_record("alice", "batch", SubmitRecord("alice", 1, [chunk]))

    summary = TransferPass(backend, _Proxies(), _Recording, topology, settings).run()
    assert (summary.replayed, summary.acquired, summary.files, _submitted) == (0, 0, 0, [])
    assert settings.sandbox("stage").count() == 1

    summary = TransferPass(backend, _Proxies(), _Recording, topology, settings, "stagein").run()
    assert (summary.replayed, summary.files) == (1, 2)
    assert _submitted == [("sid1", 3600, 600, ids)]
    assert settings.sandbox("stage").count() == 0 and settings.sandbox("monitor").count() == 1
    assert {r["tm_transfer_state"] for r in backend.get_transfers(ids)} == {"SUBMITTED"}
    assert summary.line().startswith("stager: ")
    backend.close()
