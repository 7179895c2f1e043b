"""Tape staging rules: which chunks carry bring_online (a tape source, also as a multi-hop
path's first hop), how stage-in rows become staging-only chunks, what a job from tape sends
FTS, the records that carry a staged chunk through a replay, and the monitor leaving a staging
job's wait to FTS."""

from __future__ import annotations

import itertools

from aso.components.handoffs import Chunk, MonitorEntry, SubmitRecord
from aso.components.monitor import MonitorPass
from aso.components.pipeline import PipelineSettings
from aso.components.staging import StagingSettings, plan_stageins, stagein_problem
from aso.components.transfer import plan_chunks
from aso.config import from_dict
from aso.topology import Topology
from aso.transfertools import FileResult, JobOptions, JobResult, Transfer, TransferTool
from aso.transfertools.fts3 import Fts3Tool

STAGING = StagingSettings(bring_online=3600, copy_pin_lifetime=7200, stagein_pin_lifetime=600)


def topology() -> Topology:
    return from_dict({
        "topology": {"default_distance": 0},
        "sites": {
            "TAPE": {"prefix": "file:///sites/TAPE", "fts": "https://fts-t:8446", "tape": True},
            "DISK": {"prefix": "file:///sites/DISK", "fts": "https://fts-d:8446"},
            "HUB": {"prefix": "file:///sites/HUB", "fts": "https://fts-h:8446", "available_for_multihop": True},
            "FAR": {"prefix": "file:///sites/FAR", "fts": "https://fts-f:8446"},
        },
        "links": [{"source": "TAPE", "destination": "DISK"}, {"source": "TAPE", "destination": "HUB"},
                  {"source": "HUB", "destination": "FAR"}, {"source": "DISK", "destination": "HUB"}],
    }).topology()


def row(i: int, source: str, destination: str, *, stagein: bool = False) -> dict:
    lfn = f"/store/user/u/f_{i}.root"
    return {"tm_id": f"{i:056x}", "tm_source": source, "tm_destination": destination, "tm_taskname": "task",
            "tm_source_lfn": lfn if stagein else f"/store/temp/user/u/f_{i}.root", "tm_destination_lfn": lfn,
            "tm_filesize": 10 + i, "tm_checksum": "0000abcd", "tm_type": "stagein" if stagein else "output"}


def sids():
    counter = itertools.count()
    return lambda: f"sid{next(counter)}"


def test_only_chunks_leaving_a_tape_site_carry_bring_online():
    rows = [row(1, "TAPE", "DISK"), row(2, "TAPE", "DISK"), row(3, "DISK", "HUB"), row(4, "TAPE", "FAR"),
            row(5, "HUB", "FAR")]
    plan = plan_chunks(rows, topology(), 50, sids(), staging=STAGING)
    by_ids = {tuple(c.ids()): c for c in plan.chunks}
    from_tape = by_ids[(rows[0]["tm_id"], rows[1]["tm_id"])]
    assert (from_tape.bring_online, from_tape.copy_pin_lifetime) == (3600, 7200)
    disk = by_ids[(rows[2]["tm_id"],)]
    assert (disk.bring_online, disk.copy_pin_lifetime) == (0, 0)
    multihop = by_ids[(rows[3]["tm_id"],)]  # TAPE>HUB>FAR: its first hop leaves tape
    assert multihop.path == "TAPE>HUB>FAR" and (multihop.bring_online, multihop.copy_pin_lifetime) == (3600, 7200)
    assert by_ids[(rows[4]["tm_id"],)].bring_online == 0


def test_the_default_staging_values_are_rucios():
    plan = plan_chunks([row(1, "TAPE", "DISK")], topology(), 50, sids())
    assert (plan.chunks[0].bring_online, plan.chunks[0].copy_pin_lifetime) == (43200, 172800)


def test_stageins_become_staging_only_chunks_per_site():
    rows = [row(i, "TAPE", "TAPE", stagein=True) for i in range(5)]
    plan = plan_stageins(rows, topology(), 2, STAGING, sids())
    assert [len(c.transfers) for c in plan.chunks] == [2, 2, 1]
    chunk = plan.chunks[0]
    assert chunk.endpoint == "https://fts-t:8446" and not chunk.multihop
    assert (chunk.bring_online, chunk.copy_pin_lifetime) == (3600, 600)
    t = chunk.transfers[0]
    assert t.source == t.destination == "file:///sites/TAPE/store/user/u/f_0.root"
    assert t.metadata == {"taskname": "task", "src_site": "TAPE", "dst_site": "TAPE"}
    assert not plan.bad and not plan.unconfigured


def test_a_stagein_at_a_disk_or_unknown_site_is_not_submitted():
    rows = [row(1, "DISK", "DISK", stagein=True), row(2, "NOWHERE", "NOWHERE", stagein=True)]
    plan = plan_stageins(rows, topology(), 50, STAGING, sids())
    assert plan.chunks == []
    [(bad, reason)] = plan.bad
    assert bad is rows[0] and reason.startswith("STAGEIN: site DISK is not a tape site")
    assert [row_id for row_id, _ in plan.unconfigured] == [rows[1]["tm_id"]]
    assert "sites.NOWHERE" in plan.unconfigured[0][1]


def test_stagein_problem_wants_one_site_and_one_lfn():
    tape = topology().site("TAPE")
    assert stagein_problem(row(1, "TAPE", "TAPE", stagein=True), tape) is None
    moved = {**row(1, "TAPE", "TAPE", stagein=True), "tm_destination_lfn": "/store/user/u/elsewhere.root"}
    assert "same site and LFN" in stagein_problem(moved, tape)


def test_a_job_from_tape_sends_bring_online_and_the_pin_only_when_set():
    tool = Fts3Tool("https://fts.example:8446", "/nonexistent/proxy")
    files = [Transfer("a" * 56, "file:///t/x", "file:///d/x", 5, "0000000a")]
    staged = tool.submission_body(files, JobOptions(bring_online=3600, copy_pin_lifetime=7200), "sid")["params"]
    assert (staged["bring_online"], staged["copy_pin_lifetime"]) == (3600, 7200)
    no_pin = tool.submission_body(files, JobOptions(bring_online=3600, copy_pin_lifetime=-1), "sid")["params"]
    assert no_pin["bring_online"] == 3600 and "copy_pin_lifetime" not in no_pin
    disk = tool.submission_body(files, JobOptions(), "sid")["params"]
    assert "bring_online" not in disk and "copy_pin_lifetime" not in disk
    tool.close()


def test_a_chunk_s_staging_reaches_its_job_options(tmp_path):
    settings = PipelineSettings(sandbox_root=tmp_path)
    chunk = Chunk("s", "https://f", [], "", 3600, -1)
    options = settings.options_for("alice", chunk)
    assert (options.bring_online, options.copy_pin_lifetime, options.metadata["user"]) == (3600, -1, "alice")
    assert settings.options_for("alice").bring_online == 0


def test_a_staged_chunk_survives_its_write_ahead_record_and_a_disk_one_is_written_as_before():
    plan = plan_chunks([row(1, "TAPE", "DISK"), row(2, "DISK", "HUB")], topology(), 50, sids(), staging=STAGING)
    record = SubmitRecord("u", 1, plan.chunks)
    doc = record.to_json()
    assert [("bring_online" in c, "copy_pin_lifetime" in c) for c in doc["chunks"]] == [(False, False), (True, True)]
    assert SubmitRecord.from_json(doc).chunks == plan.chunks


class _StillThere(TransferTool):
    """FTS answering every job unfinished, in the state the test says (the tool interface,
    not a patched component)."""

    name = "still-there"
    job_state = "STAGING"

    def __init__(self, endpoint: str, proxy: str):
        self.endpoint = endpoint

    def delegate(self, lifetime, renew_below):
        return None

    def expected_job_id(self, sid):
        return sid

    def submit(self, transfers, options, sid, *, multihop=False):
        return sid

    def bulk_query(self, job_ids):
        file_state = "STAGING" if self.job_state == "STAGING" else "SUBMITTED"
        return {j: JobResult(j, self.job_state, None, (FileResult("r" * 56, file_state, None),)) for j in job_ids}

    def cancel(self, job_id, file_ids=None):
        pass


class _Proxies:
    def get_proxy(self, user):
        return f"/proxies/{user}.pem"


def test_the_monitor_leaves_a_staging_job_to_fts_until_job_timeout(tmp_path):
    settings = PipelineSettings(sandbox_root=tmp_path, file_timeout=100, job_timeout=1000)
    box = settings.sandbox("monitor")
    box.write_record("alice", "job1", MonitorEntry.new("job1", "alice", "https://fts", 0,
                                                       [Transfer("r" * 56, "file:///t/x", "file:///d/x")]))
    # idle past file_timeout, but staging: FTS enforces bring_online, the job stays followed
    summary = MonitorPass(_Proxies(), _StillThere, settings, now=lambda: 500).run()
    assert (summary.timed_out_jobs, box.count()) == (0, 1)
    # past job_timeout it is abandoned all the same
    summary = MonitorPass(_Proxies(), _StillThere, settings, now=lambda: 1500).run()
    assert (summary.timed_out_jobs, box.count()) == (1, 0)


def test_the_monitor_still_abandons_an_idle_copy_past_file_timeout(tmp_path):
    settings = PipelineSettings(sandbox_root=tmp_path, file_timeout=100, job_timeout=1000)
    box = settings.sandbox("monitor")
    box.write_record("alice", "job1", MonitorEntry.new("job1", "alice", "https://fts", 0,
                                                       [Transfer("r" * 56, "file:///t/x", "file:///d/x")]))

    class _Active(_StillThere):
        job_state = "ACTIVE"

    summary = MonitorPass(_Proxies(), _Active, settings, now=lambda: 500).run()
    assert (summary.timed_out_jobs, box.count()) == (1, 0)
    [entry] = settings.sandbox("reporter").entries()
    [reported] = settings.sandbox("reporter").load_record(entry).files
    assert "monitor.file_timeout" in reported.reason
