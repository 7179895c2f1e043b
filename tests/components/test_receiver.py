"""The receiver's batches, called directly with message bodies: what becomes a reporter
hand-off, what changes nothing, and how it shares the monitor entries with the monitor."""

from __future__ import annotations

import json

from aso.components.handoffs import MonitorEntry
from aso.components.pipeline import PipelineSettings
from aso.components.receiver import Receiver, ReceiverSettings
from aso.messaging import fts3 as msg
from aso.transfertools.base import Transfer

JOB = "11111111-2222-5333-8444-555555555555"


class Clock:
    def __init__(self, t: float = 1_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def _body(row: str, job: str = JOB, user: str = "alice", state: str = "FINISHED", **change) -> str:
    f = msg.FileOutcome(
        file_id=abs(hash(row)) % 10_000, job_id=job, job_type="N", source=f"http://a.example/{row}",
        destination=f"http://b.example/{row}", source_se="http://a.example", dest_se="http://b.example", vo_name="cms",
        user_dn="/CN=u", activity="default", outcome=state, reason=None if state == "FINISHED" else "DESTINATION [5] broken",
        recoverable=False, retry=0, retry_max=3, start_time=999_990.0, finish_time=999_999.0, filesize=1, user_filesize=1,
        checksum="ADLER32", file_metadata={"oracleId": row}, job_metadata={"issuer": "ASO", "instance": "prod", "user": user},
        submit_time=999_000.0, job_state="ACTIVE", file_state=state)
    doc = msg.completion_body(f, "http://fts.example:8446")
    doc.update(change)
    return msg.encode(doc)


def _setup(tmp_path, rows=("r1", "r2", "r3"), user="alice", job=JOB):
    settings = PipelineSettings(sandbox_root=tmp_path / "sb", poll_after=300)
    clock = Clock()
    receiver = Receiver(ReceiverSettings(brokers=(), vo="cms", early_seconds=60), settings, now=clock)
    entry = MonitorEntry.new(job, user, "http://fts.example:8446", 999_000,
                             [Transfer(r, f"http://a.example/{r}", f"http://b.example/{r}") for r in rows])
    settings.sandbox("monitor").write_record(user, job, entry)
    return receiver, settings, clock


def _reported(settings, user="alice"):
    box = settings.sandbox("reporter")
    return [(f.job_id, f.id, f.state, f.reason) for e in box.entries(user) for f in box.load_record(e).files]


def _monitor(settings, user="alice", job=JOB):
    box = settings.sandbox("monitor")
    return box.load_record(box.entry(user, job))


def test_one_batch_is_one_reporter_entry_per_user_and_the_monitor_entry_records_it(tmp_path):
    receiver, settings, clock = _setup(tmp_path)
    other = "99999999-2222-5333-8444-555555555555"
    entry = MonitorEntry.new(other, "alice", "http://fts.example:8446", 999_000, [Transfer("q1", "http://a/q1", "http://b/q1")])
    settings.sandbox("monitor").write_record("alice", other, entry)
    assert receiver.hand_over([_body("r1"), _body("r2", state="FAILED"), _body("q1", job=other)]) == 3
    assert len(list(settings.sandbox("reporter").entries("alice"))) == 1
    assert sorted(_reported(settings)) == [(JOB, "r1", "FINISHED", None), (JOB, "r2", "FAILED", "DESTINATION [5] broken"),
                                           (other, "q1", "FINISHED", None)]
    job = _monitor(settings)
    assert sorted(job.reported) == ["r1", "r2"] and job.last_news == clock.t
    assert _monitor(settings, job=other) is None  # every file handed over: the entry is gone
    assert receiver.summary.handed_over == {"FINISHED": 2, "FAILED": 1}


def test_duplicates_and_files_the_monitor_handed_over_change_nothing(tmp_path):
    receiver, settings, _ = _setup(tmp_path)
    receiver.hand_over([_body("r1"), _body("r1")])
    assert _reported(settings) == [(JOB, "r1", "FINISHED", None)]
    assert receiver.summary.duplicates == 1
    before = sorted(p.name for p in (tmp_path / "sb" / "reporter" / "alice").iterdir())
    receiver.hand_over([_body("r1")])  # again, later
    assert sorted(p.name for p in (tmp_path / "sb" / "reporter" / "alice").iterdir()) == before
    assert receiver.summary.duplicates == 2
    receiver.hand_over([_body("zz")])  # a row the job does not have
    assert receiver.summary.duplicates == 3 and len(_reported(settings)) == 1


def test_a_message_before_its_monitor_entry_waits_for_it(tmp_path):
    settings = PipelineSettings(sandbox_root=tmp_path / "sb")
    clock = Clock()
    receiver = Receiver(ReceiverSettings(brokers=(), early_seconds=60), settings, now=clock)
    assert receiver.hand_over([_body("r1")]) == 0  # FTS was faster than aso transfer
    entry = MonitorEntry.new(JOB, "alice", "http://fts.example:8446", 999_000, [Transfer("r1", "s", "d"), Transfer("r2", "s", "d")])
    settings.sandbox("monitor").write_record("alice", JOB, entry)
    clock.t += 1
    assert receiver.hand_over([]) == 1
    assert _reported(settings) == [(JOB, "r1", "FINISHED", None)]
    assert receiver.hand_over([]) == 0  # handed over once


def test_a_message_for_a_job_that_never_appears_is_dropped_after_early_seconds(tmp_path):
    receiver, settings, clock = _setup(tmp_path)
    receiver.hand_over([_body("x1", job="00000000-0000-5000-8000-000000000000")])
    clock.t += 61
    receiver.hand_over([])
    assert receiver.summary.unknown_job == 1 and not receiver._early


def test_not_ours_not_final_and_malformed(tmp_path):
    receiver, settings, _ = _setup(tmp_path)
    bodies = [
        _body("r1", vo="atlas"),
        _body("r1", job_metadata={"issuer": "rucio"}),
        _body("r1", job_metadata={"issuer": "ASO", "instance": "dev", "user": "alice"}),
        _body("r2", state="FAILED", is_recoverable="true", retry=0, retry_max=3),
        "{not json", "", json.dumps([1]),
        _body("r3", job_metadata={"issuer": "ASO", "instance": "prod", "user": "../../etc"}),
        _body("r3", job_metadata={"issuer": "ASO", "instance": "prod"}),
        _body("r3", job_id="../x", tr_id=""),
    ]
    assert receiver.hand_over(bodies) == 0
    s = receiver.summary
    assert (s.foreign, s.not_final, s.malformed) == (3, 1, 5)
    assert _reported(settings) == [] and _monitor(settings).reported == []
    assert not (tmp_path / "sb" / "reporter").exists() or not list((tmp_path / "sb" / "reporter").rglob("*.json"))


def test_the_monitor_skips_jobs_with_recent_news(tmp_path):
    from aso.components.monitor import MonitorPass

    receiver, settings, clock = _setup(tmp_path)
    receiver.hand_over([_body("r1")])
    pass_ = MonitorPass(None, None, settings, now=lambda: clock.t + 10)
    summary = pass_.run()
    assert summary.quiet_skipped == 1 and summary.jobs == 0


def _hop(row: str, state: str = "FINISHED", *, last: bool, job_state: str, reason: str = "") -> str:
    """A completion message of one hop of a multihop job (every hop carries the row id)."""
    change = {"job_multihop": "true", "transfer_lasthop": "true" if last else "false", "job_state": job_state}
    if reason:
        change.update(tr_error_scope="", t_error_code=0, t__error_message=reason)
    return _body(row, state=state, **change)


def test_a_finished_intermediate_hop_does_not_end_the_row(tmp_path):
    receiver, settings, _ = _setup(tmp_path)
    assert receiver.hand_over([_hop("r1", last=False, job_state="ACTIVE")]) == 0
    assert receiver.summary.not_final == 1 and _reported(settings) == []
    assert receiver.hand_over([_hop("r1", last=True, job_state="FINISHED")]) == 1
    assert _reported(settings) == [(JOB, "r1", "FINISHED", None)]


def test_a_failed_hop_ends_the_row_once_with_its_own_reason(tmp_path):
    receiver, settings, _ = _setup(tmp_path)
    unused = _hop("r1", "FAILED", last=True, job_state="FAILED", reason="Unused hop in multi-hop")
    failed = _hop("r1", "FAILED", last=False, job_state="FAILED", reason="DESTINATION [5] broken")
    # the unused hops' messages first (brokers may reorder): they are never the outcome
    assert receiver.hand_over([unused, failed, unused]) == 1
    assert receiver.hand_over([unused]) == 0
    assert _reported(settings) == [(JOB, "r1", "FAILED", "DESTINATION [5] broken")]
    assert receiver.summary.not_final == 3


def test_a_retried_hop_is_not_final(tmp_path):
    receiver, settings, _ = _setup(tmp_path)
    retried = _hop("r1", "FAILED", last=False, job_state="ACTIVE", reason="TRANSFER [110] timeout")
    assert receiver.hand_over([retried]) == 0 and _reported(settings) == []


def test_a_failed_hop_s_reason_names_the_hop_as_the_poll_does(tmp_path):
    receiver, settings, _ = _setup(tmp_path)
    meta = {"oracleId": "r1", "hop": 2, "hops": 3, "src_site": "SITE_B", "dst_site": "SITE_C"}
    body = _hop("r1", "FAILED", last=False, job_state="FAILED", reason="DESTINATION [28] full")
    body = msg.encode({**json.loads(body), "file_metadata": meta})
    assert receiver.hand_over([body]) == 1
    assert _reported(settings) == [(JOB, "r1", "FAILED", "hop 2/3 (SITE_B -> SITE_C): DESTINATION [28] full")]
