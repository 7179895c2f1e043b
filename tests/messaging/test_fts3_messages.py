"""FTS3's completion messages: what aso fts-server writes, and what the receiver reads out of
any FTS3's (a production message with every field of the reference notes, quirks included)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aso.messaging import fts3 as msg

JOB = "9c3f9a30-8f1e-5d5e-b0a1-2f1d0e3c4b5a"

#: as a production FTS3 (3.12, msg-ifce.cpp) sends it: numbers as strings, booleans as
#: text, metadata as objects, an empty error code, one trailing space
PRODUCTION = (
    '{"endpnt":"https://fts3-cms.cern.ch:8446","src_srm_v":"","dest_srm_v":"","vo":"cms",'
    '"src_url":"davs://eoscms.cern.ch:443/eos/cms/store/temp/user/alice.1a2b/out_1.root",'
    '"dst_url":"davs://webdav.example.org:2880/store/user/alice/out_1.root","src_hostname":"eoscms.cern.ch",'
    '"dst_hostname":"webdav.example.org","src_site_name":"","dst_site_name":"",'
    '"t_channel":"davs://eoscms.cern.ch__davs://webdav.example.org","timestamp_tr_st":"1796040000000",'
    '"timestamp_tr_comp":"1796040004200","timestamp_chk_src_st":"1796040000000","timestamp_chk_src_ended":"1796040000100",'
    '"timestamp_checksum_dest_st":"1796040004100","timestamp_checksum_dest_ended":"1796040004200","t_timeout":"3600",'
    '"chk_timeout":"1800","t_error_code":"","tr_error_scope":"","t_failure_phase":"","tr_error_category":"",'
    '"t_final_transfer_state":"Ok","tr_bt_transfered":"1048576","nstreams":"1","buf_size":"0","tcp_buf_size":"0",'
    '"block_size":"0","f_size":"1048576","time_srm_prep_st":"0","time_srm_prep_end":"0","time_srm_fin_st":"0",'
    '"time_srm_fin_end":"0","srm_space_token_src":"","srm_space_token_dst":"","t__error_message":"",'
    '"tr_timestamp_start":"1796040000000","tr_timestamp_complete":"1796040004200","channel_type":"urlcopy",'
    '"user_dn":"/DC=ch/DC=cern/OU=Users/CN=alice","file_metadata":{"oracleId":"a1b2c3","src_rse":"T2_CH_CERN",'
    '"dst_rse":"T2_XX_Example"},"job_metadata":{"issuer":"ASO","instance":"prod","user":"alice",'
    '"auth_method":"certificate"},"retry":"0","retry_max":"3","job_m_replica":"false","job_state":"UNKNOWN",'
    '"is_recoverable":"false","ipver":"ipv6","eviction_code":"-1","cleanup_code":"0","final_destination":"",'
    '"transfer_type":"3rd push","auth_method":"certificate","overwrite_on_disk_flag":"false",'
    '"overwrite_on_disk_deletion_code":"-1","src_protocol":"davs","dst_protocol":"davs","src_transfer_protocol":"davs",'
    '"dst_transfer_protocol":"davs","protocol_translation":"false","job_multihop":"false","transfer_lasthop":"false",'
    '"is_archiving":"false","operation_time":"4200","transfer_time":"4000","throughput":"262.144",'
    '"scitag":"0","activity":"default","src_se":"davs://eoscms.cern.ch","dst_se":"davs://webdav.example.org",'
    '"protocol":"davs","file_id":"4023","job_id":"' + JOB + '",'
    '"tr_id":"2026-11-30-0900__eoscms.cern.ch__webdav.example.org__4023__' + JOB + '"} '
)


def test_a_production_message_is_understood():
    c = msg.Completion.from_message(PRODUCTION)
    assert (c.job_id, c.file_id, c.row_id, c.user) == (JOB, 4023, "a1b2c3", "alice")
    assert (c.issuer, c.instance, c.vo, c.endpoint) == ("ASO", "prod", "cms", "https://fts3-cms.cern.ch:8446")
    assert c.file_state == "FINISHED" and c.is_final() and c.reason == ""
    assert c.completed == pytest.approx(1796040004.2)
    assert c.is_for("ASO", "prod", "cms") and c.is_for("ASO", "prod", None)


def test_quirks_old_eot_byte_metadata_as_text_and_job_id_only_in_tr_id():
    doc = json.loads(PRODUCTION)
    doc["file_metadata"] = json.dumps(doc["file_metadata"])  # some versions send it as text
    del doc["job_id"]
    body = json.dumps(doc) + "\x04"  # before FTS 3.6
    c = msg.Completion.from_message(body.encode())
    assert c.job_id == JOB and c.row_id == "a1b2c3"


@pytest.mark.parametrize(("change", "keep"), [
    ({"vo": "atlas"}, False), ({"vo": "cms/escms"}, True),
    ({"job_metadata": {"issuer": "rucio", "instance": "prod", "user": "alice"}}, False),
    ({"job_metadata": {"issuer": "ASO", "instance": "preprod", "user": "alice"}}, False),
])
def test_messages_of_another_vo_issuer_or_instance_are_not_ours(change, keep):
    doc = {**json.loads(PRODUCTION), **change}
    assert msg.Completion.from_message(msg.encode(doc)).is_for("ASO", "prod", "cms") is keep


def test_failures_reason_and_the_final_rule():
    doc = {**json.loads(PRODUCTION), "t_final_transfer_state": "Error", "t_error_code": "17",
           "tr_error_scope": "DESTINATION", "t__error_message": "Destination file exists and overwrite is not enabled",
           "is_recoverable": "true", "retry": "1", "retry_max": "3"}
    c = msg.Completion.from_message(msg.encode(doc))
    assert c.file_state == "FAILED"
    assert c.reason == "DESTINATION [17] Destination file exists and overwrite is not enabled"
    assert not c.is_final()  # FTS retries it itself
    last = msg.Completion.from_message(msg.encode({**doc, "retry": "3"}))
    assert last.is_final()
    fatal = msg.Completion.from_message(msg.encode({**doc, "is_recoverable": False}))
    assert fatal.is_final()
    aborted = msg.Completion.from_message(msg.encode({**doc, "t_final_transfer_state": "Abort"}))
    assert aborted.file_state == "CANCELED" and aborted.is_final()
    replica = msg.Completion.from_message(msg.encode({**doc, "is_recoverable": "false", "job_state": "ACTIVE"}))
    assert not replica.is_final()  # another replica will be tried
    hop = msg.Completion.from_message(msg.encode({**doc, "is_recoverable": "false", "job_state": "FAILED",
                                                  "job_multihop": "true"}))
    assert hop.is_final()  # a failed hop fails the multihop job


def test_a_multihop_message_ends_the_row_only_when_the_whole_path_ended():
    """Every hop carries the row id of the one file it moves: only the last hop arriving, or
    the job failing or being canceled, ends that row."""
    doc = {**json.loads(PRODUCTION), "job_multihop": "true"}

    def final(**change) -> bool:
        return msg.Completion.from_message(msg.encode({**doc, **change})).is_final()

    assert not final(transfer_lasthop="false", job_state="ACTIVE")  # an intermediate hop arrived
    assert final(transfer_lasthop="true", job_state="FINISHED")
    assert final(job_state="FINISHED")  # a sender without transfer_lasthop
    failed = {"t_final_transfer_state": "Error", "t_error_code": "2", "tr_error_scope": "SOURCE",
              "t__error_message": "gone", "is_recoverable": "false"}
    assert final(**failed, job_state="FAILED")
    # the hops failed after a failed one are not news: the hop that really failed ends the row
    assert not final(**{**failed, "t__error_message": "Unused hop in multi-hop"}, job_state="FAILED",
                     transfer_lasthop="true")
    assert final(t_final_transfer_state="Abort", job_state="CANCELED")
    # aso fts-server retries a hop (FTS3 does not): ACTIVE, and not final while retries are left
    assert not final(**{**failed, "is_recoverable": "true", "retry": "0", "retry_max": "2"}, job_state="ACTIVE")
    assert not final(**failed, job_state="ACTIVE")


@pytest.mark.parametrize("body", [
    b"", b" ", b"\xff\xfe", b"[1,2]", b"not json", b'{"t_final_transfer_state": "Maybe", "job_id": "j"}',
    b'{"t_final_transfer_state": "Ok"}', b'{"t_final_transfer_state": "Ok", "job_id": "j", "retry": NaN}',
    b'{"t_final_transfer_state": "Ok", "job_id": "j", "file_id": "12x"}',
    b'{"t_final_transfer_state": "Ok", "job_id": "j", "file_metadata": [1]}',
    b'{"t_final_transfer_state": ["Ok"], "job_id": "j"}', b"[" * 100000,
])
def test_malformed_messages_raise_message_error(body):
    with pytest.raises(msg.MessageError):
        msg.Completion.from_message(body)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300),
                 st.dictionaries(st.sampled_from(["t_final_transfer_state", "job_id", "tr_id", "file_id", "retry",
                                                  "file_metadata", "job_metadata", "vo", "is_recoverable",
                                                  "tr_timestamp_complete", "t_error_code"]),
                                 st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
                                           st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3)))
                 .map(lambda d: json.dumps(d))))
def test_any_body_is_a_completion_or_a_message_error(body):
    try:
        c = msg.Completion.from_message(body)
    except msg.MessageError as exc:
        assert str(exc)  # says what is wrong
        return
    assert isinstance(c.job_id, str) and c.job_id and c.file_state in ("FINISHED", "FAILED", "CANCELED")
    assert isinstance(c.file_id, int) and isinstance(c.completed, float) and isinstance(c.is_final(), bool)


def _outcome(**change) -> msg.FileOutcome:
    base = dict(file_id=7, job_id=JOB, job_type="N", source="http://src.example:8080/a", destination="file:///d/a",
                source_se="http://src.example:8080", dest_se="file://", vo_name="cms", user_dn="/CN=alice",
                activity="default", outcome="FINISHED", reason=None, recoverable=False, retry=0, retry_max=3,
                start_time=1000.0, finish_time=1002.5, filesize=10, user_filesize=10, checksum="ADLER32:0a0b0c0d",
                file_metadata={"oracleId": "r7"}, job_metadata={"issuer": "ASO", "instance": "prod", "user": "alice"},
                submit_time=999.0, job_state="FINISHED", file_state="FINISHED")
    return msg.FileOutcome(**{**base, **change})


def test_what_fts_server_writes_reads_back_as_the_same_facts():
    body = msg.encode(msg.completion_body(_outcome(), "http://127.0.0.1:8446", "cms"))
    assert body.endswith("} ") and "\n" not in body
    doc = json.loads(body)
    assert doc["tr_id"] == f"1970-01-01-0016__src.example____7__{JOB}"
    assert doc["tr_timestamp_start"] == 1_000_000 and doc["tr_timestamp_complete"] == 1_002_500
    assert doc["t_channel"] == "http://src.example:8080__file://" and doc["job_state"] == "UNKNOWN"
    c = msg.Completion.from_message(body)
    assert (c.job_id, c.file_id, c.row_id, c.user, c.file_state, c.completed) == (JOB, 7, "r7", "alice", "FINISHED", 1002.5)

    failed = _outcome(outcome="FAILED", reason='SOURCE [2] open "/x":\nNo such file\x01', recoverable=False)
    doc = msg.completion_body(failed, "e")
    assert doc["t_error_code"] == 2 and doc["tr_error_scope"] == "SOURCE" and doc["tr_error_category"] == "NO_SUCH_FILE_OR_DIRECTORY"
    assert doc["t__error_message"] == "open /x:No such file " and doc["t_final_transfer_state"] == "Error"
    assert msg.Completion.from_message(msg.encode(doc)).reason == "SOURCE [2] open /x:No such file "
    canceled = msg.completion_body(_outcome(outcome="CANCELED", reason="Job canceled by the user"), "e")
    assert canceled["t_final_transfer_state"] == "Abort" and canceled["t_error_code"] == 125
    assert msg.completion_body(_outcome(file_metadata={}), "e")["file_metadata"] is None


def test_job_state_by_fts3s_rules():
    assert msg.completion_job_state("N", "FAILED") == "UNKNOWN"
    assert msg.completion_job_state("Y", "FINISHED") == "UNKNOWN"
    assert msg.completion_job_state("R", "FINISHED") == "FINISHED"
    assert msg.completion_job_state("R", "FAILED", replicas_left=True) == "ACTIVE"
    assert msg.completion_job_state("R", "FAILED", replicas_left=False) == "FAILED"
    assert msg.completion_job_state("H", "FAILED", last_hop=False) == "FAILED"
    assert msg.completion_job_state("H", "FINISHED", last_hop=False) == "ACTIVE"
    assert msg.completion_job_state("H", "FINISHED", last_hop=True) == "FINISHED"


def test_error_message_cleaning_and_reason_parts():
    assert msg.clean_error_message('a "b"\n\'c\'\x00' + "x" * 2000)[:6] == "a bc x"
    assert len(msg.clean_error_message("x" * 2000)) == 1024
    assert msg.split_reason("TRANSFER [110] timed out") == ("TRANSFER", 110, "timed out")
    assert msg.split_reason("free text") == ("", 0, "free text")
    assert msg.error_category(17) == "FILE_EXISTS"
