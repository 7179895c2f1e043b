"""FTS3's rules as pure functions: submissions, job ids, job states, checksums."""

from __future__ import annotations

import uuid
import zlib

import pytest

from aso.ftsd import checksum as ck
from aso.ftsd.errors import FtsHttpError
from aso.ftsd.jobs import (
    BASE_ID,
    FAILED_JOB_REASON,
    deterministic_job_id,
    fts_time,
    job_reason,
    job_state,
    parse_submission,
    queue_seconds,
)

ROOTS = ("/data",)


def body(**params):
    return {
        "files": [{"sources": ["file:///data/a"], "destinations": ["https://dest.example:8443/store/a"], "checksum": "ADLER32:1a2b", "filesize": 10, "metadata": {"id": "x"}}],
        "params": params,
    }


def test_deterministic_id_is_ftss_uuid5_construction():
    expected = str(uuid.uuid5(uuid.uuid5(BASE_ID, "cms"), "chunk-1"))
    assert deterministic_job_id("cms", "chunk-1") == expected
    assert deterministic_job_id("cms", "chunk-1") != deterministic_job_id("cms", "chunk-2")


def test_timestamps_are_naive_utc_without_fractions():
    assert fts_time(0) == "1970-01-01T00:00:00"
    assert fts_time(1_700_000_000.9) == "2023-11-14T22:13:20"
    assert fts_time(None) is None


@pytest.mark.parametrize(
    ("states", "job", "reason"),
    [
        (["FINISHED", "FINISHED"], "FINISHED", None),
        (["FINISHED", "FAILED"], "FINISHEDDIRTY", FAILED_JOB_REASON),
        (["FINISHED", "CANCELED"], "FINISHEDDIRTY", FAILED_JOB_REASON),
        (["FAILED", "CANCELED"], "FAILED", FAILED_JOB_REASON),
        (["CANCELED", "CANCELED"], "CANCELED", FAILED_JOB_REASON),
        (["FAILED"], "FAILED", FAILED_JOB_REASON),
        (["FINISHED", "SUBMITTED"], "SUBMITTED", None),
        (["ACTIVE", "SUBMITTED", "FINISHED"], "ACTIVE", None),
    ],
)
def test_job_state_from_file_states(states, job, reason):
    assert job_state(states) == job
    assert job_reason(job) == reason


def test_submission_defaults_and_params():
    spec = parse_submission(roots=ROOTS, body=body(), now=1000)
    (f,) = spec.files
    assert f.source_se == "file://" and f.dest_se == "https://dest.example"
    assert f.checksum == ck.Checksum("ADLER32", "00001a2b")
    assert spec.verify_checksum == "t"  # false/absent with a value given: target
    assert spec.priority == 3 and spec.retry == 0 and spec.retry_delay == 120
    assert spec.max_time_in_queue is None and spec.job_type == "N" and not spec.deterministic
    spec = parse_submission(roots=ROOTS, body=body(verify_checksum=True, priority=9, retry=3, retry_delay=600, max_time_in_queue=10, id_generator="deterministic", sid="s1", reuse=True, overwrite=True), now=1000)
    assert spec.verify_checksum == "b" and spec.priority == 5 and spec.retry == 3 and spec.retry_delay == 600
    assert spec.max_time_in_queue == 1000 + 36000 and spec.sid == "s1" and spec.job_type == "Y" and spec.overwrite


def test_string_metadata_becomes_a_label():
    b = body(job_metadata="hello")
    b["files"][0]["metadata"] = "lbl"
    spec = parse_submission(b, roots=ROOTS)
    assert spec.job_metadata == {"label": "hello"} and spec.files[0].metadata == {"label": "lbl"}


@pytest.mark.parametrize(
    ("mutate", "status", "text"),
    [
        (lambda b: b.pop("files"), 400, "Missing parameter: files"),
        (lambda b: b.update(files=[]), 400, "No transfers"),
        (lambda b: b["files"][0].update(sources=[]), 400, "files[0].sources"),
        (lambda b: b["files"][0].update(sources=["gsiftp://h/p"]), 400, "scheme must be one of"),
        (lambda b: b["files"][0].update(destinations=["https:///nohost"]), 400, "has no host"),
        (lambda b: b["files"][0].update(destinations=["file://remote/x"]), 400, "file URLs are local"),
        (lambda b: b["files"][0].update(sources=["file:///a/../etc/passwd"]), 400, "contains '..'"),
        (lambda b: b["files"][0].update(checksum="MD5:abcd"), 400, "only ADLER32"),
        (lambda b: b["files"][0].update(checksum="ADLER32:xyz"), 400, "not an adler32 value"),
        (lambda b: b["files"][0].update(filesize=-1), 400, "filesize"),
        (lambda b: b["files"][0].update(metadata=[1]), 400, "metadata"),
        (lambda b: b["files"][0].update(metadata={"x": "y" * 2000}), 400, "longer than 1024"),
        (lambda b: b["params"].update(id_generator="deterministic"), 400, "sid"),
        (lambda b: b["params"].update(verify_checksum="sometimes"), 400, "verify_checksum"),
        (lambda b: b["params"].update(max_time_in_queue="soon"), 400, "max_time_in_queue"),
        (lambda b: b.update(delete=[{"x": 1}]), 405, "Deletion"),
    ],
)
def test_bad_submissions_name_the_problem(mutate, status, text):
    b = body()
    mutate(b)
    with pytest.raises(FtsHttpError) as err:
        parse_submission(b, roots=ROOTS)
    assert err.value.status == status
    assert text in err.value.message
    assert err.value.body()["status"].startswith(str(status))


def test_queue_time_units():
    assert queue_seconds(2) == 7200
    assert queue_seconds("90m") == 5400 and queue_seconds("30s") == 30 and queue_seconds("1d") == 86400
    assert queue_seconds(None) is None and queue_seconds(0) is None


def test_checksum_rules():
    assert ck.parse(None) == ck.Checksum("ADLER32", None)
    assert ck.parse("adler32") == ck.Checksum("ADLER32", None)
    assert str(ck.parse("ADLER32:01a2B")) == "ADLER32:00001a2b"
    assert ck.same("0001a2b", "1A2B") and not ck.same("1a2b", "1a2c")
    assert ck.mode_from_param(False, has_value=False) == "n" and ck.mode_from_param("source", True) == "s"
    wanted = ck.parse("ADLER32:1111")
    assert ck.verify("n", wanted, "2222", "3333") is None
    assert "Source and user-defined" in ck.verify("s", wanted, "2222", None)
    assert "Destination and user-defined" in ck.verify("t", wanted, None, "2222")
    assert ck.verify("b", ck.parse("ADLER32"), "aaaa", "bbbb") == "Source and destination ADLER32 checksum do not match (aaaa != bbbb)"
    assert ck.verify("b", wanted, "00001111", "1111") is None


def test_streaming_adler32_matches_zlib(tmp_path):
    data = bytes(range(256)) * 40000
    path = tmp_path / "f"
    path.write_bytes(data)
    assert ck.adler32_of_file(str(path), buffer_size=4096) == f"{zlib.adler32(data) & 0xffffffff:08x}"
