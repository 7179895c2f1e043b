"""The sandbox records: today's on-disk JSON (and the older one-chunk write-ahead record)
loads, and writes back byte for byte the same; a wrong shape is refused with a clear error."""

from __future__ import annotations

import json

import pytest

from aso.components.handoffs import (
    Chunk,
    HandoffShapeError,
    MonitorEntry,
    ReportedFile,
    ReporterEntry,
    SubmitRecord,
)
from aso.sandbox import Sandbox
from aso.transfertools import Transfer

TRANSFER = {"id": "r1", "source": "file:///s/1", "destination": "file:///d/1", "filesize": 5, "checksum": "0000000a",
            "metadata": {"taskname": "t", "src_site": "A", "dst_site": "B"}}
CHUNK = {"sid": "sid1", "endpoint": "https://fts:8446", "transfers": [TRANSFER]}
# exactly what the previous version wrote
SUBMIT = {"user": "alice", "created": 1700000000, "chunks": [CHUNK]}
MONITOR = {"job_id": "job1", "user": "alice", "endpoint": "https://fts:8446", "submitted": 1700000000,
           "files": {"r1": {"source": "file:///s/1", "destination": "file:///d/1"}}, "reported": [], "batches": 0,
           "last_progress": 1700000000}
REPORTER = {"job_id": "job1", "user": "alice", "endpoint": "https://fts:8446",
            "files": [{"id": "r1", "state": "FAILED", "reason": "no space"}, {"id": "r2", "state": "FINISHED", "reason": None}]}


@pytest.mark.parametrize("kind,record,doc", [
    ("submit", SubmitRecord, SUBMIT), ("monitor", MonitorEntry, MONITOR), ("reporter", ReporterEntry, REPORTER),
])
def test_todays_format_loads_and_is_written_back_unchanged(tmp_path, kind, record, doc):
    box = Sandbox(tmp_path, kind)
    box.write("alice", "e", doc)  # as the previous version wrote it
    (entry,) = box.entries()
    loaded = box.load_record(entry)
    assert isinstance(loaded, record)
    assert json.dumps(loaded.to_json(), sort_keys=True) == json.dumps(doc, sort_keys=True)
    box.write_record("alice", "e", loaded)
    assert box.load(entry) == doc


def test_an_older_one_chunk_record_still_loads():
    record = SubmitRecord.from_json(CHUNK)
    assert record.chunks == [Chunk("sid1", "https://fts:8446", [Transfer(**TRANSFER)])]
    assert record.ids() == ["r1"]


def test_records_say_what_they_name():
    monitor = MonitorEntry.from_json(MONITOR)
    assert monitor.ids() == ["r1"] and monitor.unreported() == ["r1"] and not monitor.complete
    monitor.reported = ["r1"]
    assert monitor.complete
    monitor.watch(["r1", "r9"])
    assert monitor.unreported() == ["r1", "r9"] and monitor.files["r9"] == {"source": None, "destination": None}
    assert ReporterEntry.from_json(REPORTER).files[0] == ReportedFile("r1", "FAILED", "no space")
    assert Chunk.from_json(CHUNK).live({"r1"}) == []


@pytest.mark.parametrize("record,doc,message", [
    (MonitorEntry, [], "JSON object"),
    (MonitorEntry, {**MONITOR, "batches": "1"}, "'batches' must be a number"),
    (ReporterEntry, {"job_id": "j", "files": [5]}, "an 'id' and a 'state'"),
    (SubmitRecord, {"chunks": 5}, "'chunks' must be a list"),
    (SubmitRecord, {"chunks": [{**CHUNK, "transfers": [{}]}]}, "every transfer"),
])
def test_a_wrong_shape_is_refused_with_a_clear_error(record, doc, message):
    with pytest.raises(HandoffShapeError, match=message):
        record.from_json(doc)


def test_a_record_of_another_kind_is_not_written(tmp_path):
    with pytest.raises(TypeError):
        Sandbox(tmp_path, "monitor").write_record("alice", "e", ReporterEntry.from_json(REPORTER))


def test_a_chunk_writes_its_transfers_as_asdict_would():
    from dataclasses import asdict

    from aso.components.handoffs import Chunk
    from aso.transfertools import Transfer

    transfers = [Transfer("a" * 56, "file:///s/x", "file:///d/x", 12, "0000abcd", {"taskname": "t", "hop": 1}),
                 Transfer("b" * 56, "file:///s/y", "file:///d/y")]
    doc = Chunk("sid1", "http://fts", transfers).to_json()
    assert doc["transfers"] == [asdict(t) for t in transfers]
    assert [list(t) for t in doc["transfers"]] == [list(asdict(t)) for t in transfers]
    assert Chunk.from_json(doc).transfers == transfers


def test_a_polls_handoffs_become_one_entry_named_by_its_jobs(tmp_path):
    from aso.components.monitor import one_handoff

    a = ("job-a_0", ReporterEntry("job-a", [ReportedFile("r1", "FINISHED"), ReportedFile("r2", "FAILED", "no space")],
                                  "alice", "https://fts"))
    b = ("job-b_2", ReporterEntry("job-b", [ReportedFile("r3", "FINISHED")], "alice", "https://fts"))
    # one job's hand-over keeps its own entry and name
    assert one_handoff([a]) == [a]
    assert one_handoff([]) == []
    [(name, merged)] = one_handoff([a, b])
    assert merged.job_id is None and (merged.user, merged.endpoint) == ("alice", "https://fts")
    assert merged.results() == [("job-a", ReportedFile("r1", "FINISHED", None, "job-a")),
                                ("job-a", ReportedFile("r2", "FAILED", "no space", "job-a")),
                                ("job-b", ReportedFile("r3", "FINISHED", None, "job-b"))]
    # the same jobs at the same hand-over counts (a pass killed before it recorded them, run
    # again) give the same name, whatever their order; another count gives another
    assert one_handoff([b, a])[0][0] == name and name.startswith("jobs-")
    assert one_handoff([a, ("job-b_3", b[1])])[0][0] != name
    # what the reporter reads back is what was handed over
    box = Sandbox(tmp_path, "reporter")
    box.write_records("alice", [(name, merged)])
    [entry] = box.entries()
    assert entry.name == name and box.load_record(entry).results() == merged.results()
