"""The group recorder: workers' results committed together, made durable first."""

from __future__ import annotations

import time

import pytest

from aso.ftsd.db import JobStore
from aso.ftsd.executor import GroupRecorder
from aso.ftsd.jobs import parse_submission
from aso.ftsd.service import local_identity


def _store_with_files(tmp_path, n: int) -> tuple[JobStore, list[int]]:
    store = JobStore(tmp_path / "fts.db")
    for i in range(n):
        (tmp_path / f"s{i}").write_bytes(b"x")
    spec = parse_submission({"files": [{"sources": [(tmp_path / f"s{i}").as_uri()],
                                        "destinations": [(tmp_path / "out" / f"d{i}").as_uri()]} for i in range(n)],
                             "params": {"retry": -1}}, roots=(str(tmp_path),))
    job = store.submit(spec, local_identity("/CN=test"))
    tasks = store.claim([f["file_id"] for f in store.files([job])[job]])
    return store, [t.file_id for t in tasks]


def test_finishes_from_many_workers_are_recorded_together_after_one_sync(tmp_path):
    store, ids = _store_with_files(tmp_path, 40)
    (tmp_path / "out").mkdir()
    recorder = GroupRecorder(store)
    try:
        calls = [recorder.submit("finish", fid, "FINISHED", filesize=1, sync=str(tmp_path / "out")) for fid in ids]
        for c in calls:
            assert c.done.wait(10) and c.error is None and c.result.file_state == "FINISHED"
        marked = recorder.call("checkpoint", ids[0], 1, committing=True)  # a finished file is left alone
        assert marked is None
    finally:
        recorder.stop()
    files = next(iter(store.files([store.list_jobs(states=["FINISHED"])[0]["job_id"]]).values()))
    assert [f["file_state"] for f in files] == ["FINISHED"] * 40
    store.close()


def test_a_sync_that_fails_fails_the_copies_it_was_for(tmp_path):
    store, ids = _store_with_files(tmp_path, 2)
    recorder = GroupRecorder(store)
    try:
        gone = recorder.submit("finish", ids[0], "FINISHED", filesize=1, checksum="ADLER32:00620062",
                               sync=str(tmp_path / "no" / "such" / "folder"))
        assert gone.done.wait(10)
        assert gone.result.file_state == "FAILED"
        fine = recorder.call("finish", ids[1], "FINISHED", filesize=1)
        assert fine.file_state == "FINISHED"
    finally:
        recorder.stop()
    by_id = {f["file_id"]: f for fs in store.files([f["job_id"] for f in store.list_jobs(states=["FINISHEDDIRTY"])]).values()
             for f in fs}
    assert by_id[ids[0]]["file_state"] == "FAILED"
    assert by_id[ids[0]]["reason"].startswith("DESTINATION [2] sync of ") and "no/such/folder" in by_id[ids[0]]["reason"]
    assert by_id[ids[0]]["recoverable"] is True and by_id[ids[1]]["file_state"] == "FINISHED"
    store.close()


def test_a_batch_that_cannot_be_recorded_puts_its_files_back_in_the_queue(tmp_path):
    store, ids = _store_with_files(tmp_path, 1)
    recorder = GroupRecorder(store)
    try:
        # a finish the store cannot record (whatever the reason): tried again, then given up
        bad = recorder.submit("finish", ids[0], "FINISHED", no_such_keyword=1)
        assert bad.done.wait(20) and isinstance(bad.error, TypeError)
    finally:
        recorder.stop()
    (files,) = store.files([store.list_jobs(states=["ACTIVE", "SUBMITTED"])[0]["job_id"]]).values()
    assert files[0]["file_state"] == "SUBMITTED"  # queued again, not ACTIVE until a restart
    store.close()



@pytest.mark.parametrize("grouped", [False, True], ids=["recorded-at-once", "group-recorder"])
def test_a_copy_that_ends_after_its_file_was_canceled_leaves_no_destination(tmp_path, grouped):
    """The cancel lands between a copy's last look at its interrupts and its recorded
    finish: the file is CANCELED, so the destination that copy made is removed (a killed
    transfer's file must not be there after all)."""
    from aso.ftsd.executor import Executor, ExecutorSettings
    from aso.ftsd.scheduler import GlobalLimit, Scheduler

    store = JobStore(tmp_path / "fts.db")
    (tmp_path / "src").write_bytes(b"some bytes")
    (tmp_path / "out").mkdir()
    spec = parse_submission({"files": [{"sources": [(tmp_path / "src").as_uri()],
                                        "destinations": [(tmp_path / "out" / "dst").as_uri()]}],
                             "params": {"retry": -1}}, roots=(str(tmp_path),))
    job = store.submit(spec, local_identity("/CN=test"))
    (task,) = store.claim([f["file_id"] for f in store.files([job])[job]])
    # no workers: this test plays the worker whose copy the cancel overtakes
    executor = Executor(store, Scheduler([GlobalLimit(1)]), ExecutorSettings(workers=0, roots=(str(tmp_path),)))
    if grouped:
        executor.start()  # the group recorder records the finish
    try:
        states, _ = store.cancel_files(job, [task.file_id])  # the executor does not hear of it in time
        assert states == {task.file_id: "CANCELED"}
        executor._run(task)
        deadline = time.monotonic() + 10
        while (tmp_path / "out" / "dst").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not (tmp_path / "out" / "dst").exists(), "a canceled file's destination stayed"
        assert store.files([job])[job][0]["file_state"] == "CANCELED"
    finally:
        if grouped:
            executor.stop()
        store.close()


def test_a_bulk_status_renders_only_the_fields_asked_for_and_as_the_full_file_shows_them(tmp_path):
    from aso.ftsd.db_rows import FILE_KEYS

    store, ids = _store_with_files(tmp_path, 3)
    job = store.list_jobs()[0]["job_id"]
    full = store.files([job])[job]
    for keys in (list(FILE_KEYS), ["file_id", "file_state", "file_metadata", "finish_time"], []):
        assert store.files([job], keys)[job] == [{k: f[k] for k in keys} for f in full]
