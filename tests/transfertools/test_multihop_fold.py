"""The fts3 tool folds a multihop job's hops into one result per row (a pure function of
the FTS3 status answer), and asks for a multihop job when told to."""

from __future__ import annotations

import pytest

from aso.transfertools import JobOptions, Transfer
from aso.transfertools.base import HOP_KEY, HOPS_KEY
from aso.transfertools.fts3 import Fts3Tool, fold_hops, job_result

ROW = "r" * 56
SITES = ("SITE_A", "SITE_B", "SITE_C", "SITE_D")


def hop(k: int, state: str, reason: str = "", n: int = 3, row: str = ROW) -> dict:
    a, b = SITES[k - 1], SITES[k]
    return {"file_id": 100 + k, "file_index": k - 1, "file_state": state, "reason": reason,
            "source_surl": f"file:///{a}/x", "dest_surl": f"file:///{b}/x",
            "file_metadata": {"oracleId": row, "src_site": a, "dst_site": b, HOP_KEY: k, HOPS_KEY: n}}


def job(*files: dict, state: str = "ACTIVE", job_type: str = "H") -> dict:
    return {"job_id": "j1", "job_state": state, "job_type": job_type, "reason": None, "files": list(files)}


def test_finished_when_the_last_hop_finished():
    result = job_result(job(hop(1, "FINISHED"), hop(2, "FINISHED"), hop(3, "FINISHED"), state="FINISHED"))
    assert result.multihop and result.terminal
    (f,) = result.files
    assert (f.transfer_id, f.state, f.reason) == (ROW, "FINISHED", None)
    assert (f.source, f.destination) == ("file:///SITE_A/x", "file:///SITE_D/x")  # the path's ends


@pytest.mark.parametrize("states,state,file_id", [
    (("SUBMITTED", "NOT_USED", "NOT_USED"), "SUBMITTED", 101),
    (("FINISHED", "ACTIVE", "NOT_USED"), "ACTIVE", 102),
    (("FINISHED", "FINISHED", "NOT_USED"), "NOT_USED", 103),  # the next hop not let go yet
    (("FINISHED", "FINISHED", "ACTIVE"), "ACTIVE", 103),
])
def test_unfinished_while_a_hop_is_under_way(states, state, file_id):
    (f,) = job_result(job(*(hop(k, s) for k, s in enumerate(states, 1)))).files
    assert (f.state, f.terminal, f.reason, f.file_id) == (state, False, None, file_id)


def test_failed_with_the_first_failed_hop_s_reason_not_the_unused_hops():
    answer = job(hop(3, "FAILED", "Unused hop in multi-hop"), hop(1, "FINISHED"),
                 hop(2, "FAILED", "DESTINATION [28] No space left on device"), state="FAILED")
    (f,) = job_result(answer).files
    assert f.state == "FAILED" and f.terminal
    assert f.reason == "hop 2/3 (SITE_B -> SITE_C): DESTINATION [28] No space left on device"


def test_canceled_names_the_hop_that_was_under_way():
    (f,) = fold_hops([hop(1, "FINISHED"), hop(2, "CANCELED", "Job canceled by the user"), hop(3, "CANCELED", "Job canceled by the user")])
    assert (f.state, f.reason) == ("CANCELED", "hop 2/3 (SITE_B -> SITE_C): Job canceled by the user")


def test_without_hop_metadata_the_file_index_orders_the_hops():
    files = [hop(2, "FAILED", "Unused hop in multi-hop"), hop(1, "FAILED", "SOURCE [2] No such file")]
    for f in files:
        f["file_metadata"] = {"oracleId": ROW}
    (f,) = job_result(job(*files, state="FAILED")).files
    assert f.reason == "hop 1/2: SOURCE [2] No such file"


def test_a_regular_job_is_not_folded():
    files = [hop(1, "FINISHED", n=1, row="a"), hop(1, "FAILED", "broken", n=1, row="b")]
    result = job_result(job(*files, state="FINISHEDDIRTY", job_type="N"))
    assert not result.multihop
    assert [(f.transfer_id, f.state, f.reason) for f in result.files] == [("a", "FINISHED", None), ("b", "FAILED", "broken")]


def test_the_hop_metadata_alone_says_multihop():
    result = job_result(job(hop(1, "FINISHED", n=2), hop(2, "ACTIVE", n=2), job_type=""))
    assert result.multihop and [f.state for f in result.files] == ["ACTIVE"]


def test_the_submission_asks_for_a_multihop_job():
    tool = Fts3Tool("https://fts.example:8446", "/nonexistent/proxy")
    hops = [Transfer(ROW, "file:///a/x", "file:///b/x", 5, "0000000a", {HOP_KEY: 1, HOPS_KEY: 2}),
            Transfer(ROW, "file:///b/x", "file:///c/x", 5, "0000000a", {HOP_KEY: 2, HOPS_KEY: 2})]
    body = tool.submission_body(hops, JobOptions(), "sid", multihop=True)
    assert body["params"]["multihop"] is True and body["params"]["overwrite_hop"] is True
    assert [f["metadata"]["oracleId"] for f in body["files"]] == [ROW, ROW]
    assert all(f["filesize"] == 5 and f["checksum"] == "ADLER32:0000000a" for f in body["files"])
    direct = tool.submission_body(hops[:1], JobOptions(), "sid")["params"]
    assert "multihop" not in direct and "overwrite_hop" not in direct
    tool.close()
