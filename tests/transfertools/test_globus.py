"""The globus transfer tool against Globus Auth and the Transfer API as ``responses`` answer
them (:mod:`tests.transfertools.globus_fake`)."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import responses

from aso.errors import ConfigError
from aso.transfertools import JobOptions, Transfer, TransferToolError
from aso.transfertools.globus import (
    CollectionMap,
    GlobusContext,
    GlobusSettings,
    GlobusSite,
    GlobusTool,
    job_state,
    retry_delay,
    task_label,
)
from aso.validate import lfn_id
from tests.transfertools.globus_fake import AUTH, TRANSFER, FakeGlobus

SRC, DST = "0b7a2f3e-5c51-4b6e-9d1e-3c0f6f1a2b01", "6d2e1c4b-8a3f-4e7d-b2c9-1f0e9d8c7b02"
ENDPOINT = "globus+" + TRANSFER


def collections() -> CollectionMap:
    return CollectionMap([GlobusSite("T2_A", "https://g-a.data.fake.test/cms", SRC),
                          GlobusSite("T2_B", "https://g-b.data.fake.test", DST)])


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "globus-secret"
    path.write_text("s3cret\n")
    path.chmod(0o600)
    return path


def make_tool(secret, **settings) -> GlobusTool:
    options = {"max_backoff": 0.01, "backoff": 0.001, **settings}
    return GlobusTool(ENDPOINT, GlobusContext(GlobusSettings("client-1", str(secret), AUTH, **options), collections()))


@pytest.fixture
def fake():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield FakeGlobus(rsps)


def transfers(n: int) -> list[Transfer]:
    out = []
    for i in range(n):
        lfn = f"/store/temp/user/alice/task/f{i}.root"
        out.append(Transfer(id=lfn_id(lfn), source=f"https://g-a.data.fake.test/cms{lfn}",
                            destination=f"https://g-b.data.fake.test/store/user/alice/task/f{i}.root", filesize=10))
    return out


def test_submit_fetches_a_token_and_a_submission_id_and_sends_one_labelled_task(fake, secret):
    tool = make_tool(secret)
    assert tool.delegate(None, None) is None  # no proxy delegation in Globus
    task_id = tool.submit(transfers(3), JobOptions(), "sid1")
    assert fake.tokens == 1 and len(fake.submissions) == 1
    body = fake.submissions[0]
    assert (body["DATA_TYPE"], body["source_endpoint"], body["destination_endpoint"]) == ("transfer", SRC, DST)
    assert body["label"] == task_label("sid1") == "aso-sid1"
    assert body["skip_source_errors"] is True and body["verify_checksum"] is True and "T" in body["deadline"]
    assert [i["source_path"] for i in body["DATA"]] == [f"/cms/store/temp/user/alice/task/f{i}.root" for i in range(3)]
    assert body["DATA"][0]["destination_path"] == "/store/user/alice/task/f0.root"
    assert fake.tasks[task_id].doc["submission_id"] == body["submission_id"]
    # a second tool of the same context shares the token
    other = GlobusTool(ENDPOINT, tool.context)
    assert other.bulk_query([task_id])[task_id].state == "ACTIVE"
    assert fake.tokens == 1


def test_a_resubmission_after_a_crash_finds_the_task_and_submits_nothing(fake, secret):
    first = make_tool(secret).submit(transfers(2), JobOptions(), "sid2")
    # a new process (new token, new tool) replays the same chunk
    again = make_tool(secret)
    assert again.expected_job_id("sid2") == first
    assert again.submit(transfers(2), JobOptions(), "sid2") == first
    assert len(fake.submissions) == 1 and len(fake.tasks) == 1
    # a chunk never submitted: its job id is its label, which Globus does not know
    assert again.expected_job_id("sid-never") == "aso-sid-never"
    assert again.bulk_query(["aso-sid-never"])["aso-sid-never"].state == "LOST"


def test_a_retried_post_reuses_its_submission_id(fake, secret):
    fake.fail_next("transfer", 503)
    task_id = make_tool(secret).submit(transfers(1), JobOptions(), "sid3")
    assert len(fake.submissions) == 1 and list(fake.tasks) == [task_id]


def test_status_pages_successful_transfers_and_maps_paths_to_rows(fake, secret):
    tool = make_tool(secret)
    files = transfers(5)
    task_id = tool.submit(files, JobOptions(), "sid4")
    running = tool.bulk_query([task_id])[task_id]
    assert (running.state, running.files, running.terminal) == ("ACTIVE", (), False)
    fake.finish(task_id)
    result = tool.bulk_query([task_id])[task_id]
    assert (result.state, result.unlisted) == ("FINISHED", "FINISHED")
    assert {f.transfer_id: f.state for f in result.files} == {t.id: "FINISHED" for t in files}
    assert {f.destination for f in result.files} == {t.destination for t in files}
    assert {f.source for f in result.files} == {t.source for t in files}
    pages = [c for c in fake.rsps.calls if "successful_transfers" in c.request.url]
    assert len(pages) == 3  # 5 files, 2 a page: marker paging followed to the end
    assert "marker=2" in pages[1].request.url and "marker=4" in pages[2].request.url


def test_a_failed_task_gives_per_file_reasons_and_its_fatal_error(fake, secret):
    tool = make_tool(secret)
    files = transfers(3)
    task_id = tool.submit(files, JobOptions(), "sid5")
    missing = "/cms/store/temp/user/alice/task/f1.root"
    fake.finish(task_id, "FAILED", skipped={missing: ("FILE_NOT_FOUND", "No such file or directory")},
                fatal_error={"code": "FAULTS", "description": "too many faults"},
                events=[{"DATA_TYPE": "event", "code": "PERMISSION_DENIED", "is_error": True,
                         "description": "permission denied", "details": "550 write refused",
                         "time": "2026-11-30T10:04:00+00:00"}], copied=2)
    result = tool.bulk_query([task_id])[task_id]
    assert result.state == "FAILED" and result.unlisted is None
    assert "FAULTS: too many faults" in result.reason and "550 write refused" in result.reason
    states = {f.transfer_id: (f.state, f.reason) for f in result.files}
    assert states[files[1].id] == ("FAILED", "Globus skipped the file: FILE_NOT_FOUND No such file or directory")
    assert states[files[0].id] == ("FINISHED", None)
    assert files[2].id not in states  # neither copied nor skipped: the monitor fails it with the task's reason


def test_a_succeeded_task_with_skipped_files_is_finisheddirty(fake, secret):
    tool = make_tool(secret)
    files = transfers(2)
    task_id = tool.submit(files, JobOptions(), "sid6")
    fake.finish(task_id, skipped={"/cms/store/temp/user/alice/task/f0.root": ("PERMISSION_DENIED", "denied")})
    result = tool.bulk_query([task_id])[task_id]
    assert result.state == "FINISHEDDIRTY" and result.terminal
    assert {f.transfer_id: f.state for f in result.files} == {files[0].id: "FAILED", files[1].id: "FINISHED"}


def test_429_is_retried_after_a_bounded_back_off(fake, secret):
    tool = make_tool(secret)
    task_id = tool.submit(transfers(1), JobOptions(), "sid7")
    fake.fail_next("task_list", 429, {"Retry-After": "30"})
    fake.fail_next("task_list", 429, {"Retry-After": "30"})
    start = time.monotonic()
    assert tool.bulk_query([task_id])[task_id].state == "ACTIVE"
    assert time.monotonic() - start < 2  # Retry-After: 30 capped by max_backoff (0.01 s)
    # past max_retries it gives up: a transient error, retried at the next pass
    bounded = make_tool(secret, max_retries=1)
    for _ in range(3):
        fake.fail_next("task_list", 429, {"Retry-After": "1"})
    with pytest.raises(TransferToolError) as info:
        bounded.bulk_query([task_id])
    assert info.value.transient and info.value.status == 429


def test_retry_delay_honours_retry_after_within_the_cap():
    assert retry_delay(0, 30.0, 1.0, 60.0) == 30.0
    assert retry_delay(0, 90.0, 1.0, 60.0) == 60.0
    assert retry_delay(3, None, 1.0, 60.0) == 8.0
    assert retry_delay(10, None, 1.0, 60.0) == 60.0


def test_an_expired_token_is_renewed_once(fake, secret):
    tool = make_tool(secret)
    task_id = tool.submit(transfers(1), JobOptions(), "sid8")
    fake.valid_token = "rotated"  # Globus no longer accepts the token the tool holds
    assert tool.bulk_query([task_id])[task_id].state == "ACTIVE"
    assert fake.tokens == 2
    fake.fail_next("task_list", 401)
    fake.fail_next("task_list", 401)
    with pytest.raises(TransferToolError) as info:  # a 401 again after the new token: not looped on
        tool.bulk_query([task_id])
    assert info.value.status == 401 and info.value.transient
    assert fake.tokens == 3


def test_cancel_cancels_the_whole_task_only(fake, secret):
    tool = make_tool(secret)
    task_id = tool.submit(transfers(2), JobOptions(), "sid9")
    tool.cancel(task_id, [])  # no file: nothing
    assert fake.canceled == []
    with pytest.raises(TransferToolError) as info:
        tool.cancel(task_id, [1])
    assert not info.value.transient and "whole tasks" in str(info.value)
    tool.cancel(task_id)
    assert fake.canceled == [task_id]
    assert tool.bulk_query([task_id])[task_id].state == "CANCELED"
    tool.cancel(str(uuid.uuid4()))  # unknown to Globus: nothing to cancel, no error
    tool.cancel("aso-never-submitted")


def test_unknown_tasks_are_lost_and_do_not_hide_the_others(fake, secret):
    tool = make_tool(secret, bulk_size=2)
    known = [tool.submit(transfers(1), JobOptions(), f"sid-l{i}") for i in range(3)]
    unknown = str(uuid.uuid4())
    results = tool.bulk_query([*known, unknown])
    assert results[unknown].state == "LOST" and results[unknown].terminal
    assert all(results[k].state == "ACTIVE" for k in known)
    listing = [c for c in fake.rsps.calls if "task_id%3A" in c.request.url]
    assert len(listing) == 2  # 4 ids, 2 per task_list request


def test_a_url_under_no_globus_site_is_refused(fake, secret):
    bad = Transfer(id="x", source="https://elsewhere.fake.test/store/x", destination="https://g-b.data.fake.test/x")
    with pytest.raises(TransferToolError) as info:
        make_tool(secret).submit([bad], JobOptions(), "sid10")
    assert not info.value.transient and "globus_collection" in str(info.value)
    with pytest.raises(TransferToolError) as info:
        make_tool(secret).submit(transfers(2), JobOptions(), "sid11", multihop=True)
    assert not info.value.transient


def test_the_secret_file_must_be_private(fake, tmp_path):
    loose = tmp_path / "loose"
    loose.write_text("s3cret")
    loose.chmod(0o644)
    with pytest.raises(TransferToolError) as info:
        make_tool(loose).submit(transfers(1), JobOptions(), "sid12")
    assert "globus.client_secret_file" in str(info.value) and "0644" in str(info.value)
    assert info.value.transient and fake.tokens == 0  # the chunk waits for the fix, its rows keep their retries
    with pytest.raises(ConfigError, match="cannot read"):
        GlobusSettings("c", str(tmp_path / "absent")).secret()


def test_job_state_maps_globus_task_states():
    assert job_state({"status": "ACTIVE"}) == ("ACTIVE", None)
    state, reason = job_state({"status": "INACTIVE", "nice_status": "CREDENTIAL_EXPIRED"})
    assert state == "ACTIVE" and "CREDENTIAL_EXPIRED" in reason
    assert job_state({"status": "SUCCEEDED"}) == ("FINISHED", None)
    assert job_state({"status": "SUCCEEDED", "subtasks_skipped_errors": 2})[0] == "FINISHEDDIRTY"
    assert job_state({"status": "FAILED", "fatal_error": {"code": "CANCELED", "description": "x"}})[0] == "CANCELED"
    assert job_state({"status": "FAILED", "fatal_error": {"code": "EXPIRED", "description": "deadline"}}) == (
        "FAILED", "Globus task FAILED: EXPIRED: deadline")


def test_collection_map_round_trips_urls_and_row_ids():
    cmap = collections()
    url = "https://g-a.data.fake.test/cms/store/temp/user/a/f.root"
    assert cmap.locate(url) == (SRC, "/cms/store/temp/user/a/f.root")
    assert cmap.url(SRC, "/cms/store/temp/user/a/f.root") == url
    assert cmap.row_id(SRC, "/cms/store/temp/user/a/f.root") == lfn_id("/store/temp/user/a/f.root")
    assert cmap.row_id(DST, "/cms/store/temp/user/a/f.root") == lfn_id("/cms/store/temp/user/a/f.root")
    assert cmap.url(str(uuid.uuid4()), "/x") is None


def test_labels_are_what_globus_accepts():
    assert task_label(uuid.uuid4().hex).startswith("aso-")
    with pytest.raises(ValueError):
        task_label("bad/sid")


def test_the_submitted_document_is_json_globus_reads(fake, secret):
    make_tool(secret, sync_level="checksum", deadline_hours=0).submit(transfers(1), JobOptions(verify_checksum="none"),
                                                                       "sid13")
    body = fake.submissions[0]
    assert body["sync_level"] == 3 and body["verify_checksum"] is False and "deadline" not in body
    assert json.loads(json.dumps(body)) == body
