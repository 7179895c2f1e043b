"""Multi-hop paths end to end, as an operator runs them: three sites as local folders, links
A -> B and B -> C only, B available for multi-hop; a file injected from A to C goes A>B>C
as one FTS multihop job of a real ``aso fts-server`` (over HTTPS), and arrives byte-identical,
its row DONE with its path recorded and the copy at B removed. A file with no path goes
RETRY with a NO_PATH reason, without reaching FTS."""

from __future__ import annotations

import json
import time

from aso.config import load_config
from tests.pipeline.conftest import installation, users_for
from tests.pipeline.harness import Installation, all_in, fts_jobs_by_row

A, B, C = "T2_XX_Source", "T2_YY_Dest", "T2_ZZ_Dest"


def with_links(inst: Installation, links: list[tuple[str, str]], hop_sites: tuple[str, ...] = (B,)) -> None:
    """Only ``links`` exist ([topology] default_distance = 0 is set at init), and
    ``hop_sites`` may be intermediate."""
    text = inst.config_path.read_text()
    for site in hop_sites:
        text = text.replace(f"[sites.{site}]\n", f"[sites.{site}]\navailable_for_multihop = true\n")
    for source, destination in links:
        text += f'\n[[links]]\nsource = "{source}"\ndestination = "{destination}"\n'
    inst.config_path.write_text(text)
    inst.config = load_config(str(inst.config_path))


def multihop_installation(tmp_path, fts, pki, links=((A, B), (B, C))) -> tuple[Installation, str]:
    # FTS3 never retries a multihop hop; the embedded service would, after retry_delay: not here
    inst = installation(tmp_path, fts, "topology.default_distance=0", "fts.retry=-1")
    with_links(inst, list(links))
    (user,) = users_for(pki, inst, 1)
    return inst, user


def test_a_file_goes_a_b_c_as_one_multihop_job(tmp_path, pki, fts):
    inst, user = multihop_installation(tmp_path, fts, pki)
    assert inst.aso("topology", "path", A, C).stdout.startswith(f"{A}>{B}>{C}  (multi-hop")
    requests = inst.make_requests([user], 3, links=[(A, C), (A, B), (A, C)], missing=1)
    inst.inject(requests)
    out = json.loads(inst.aso("transfer", "--json").stdout)
    assert out["files"] == 3 and out["jobs"] == 3  # a job per multi-hop row; the direct row its own link's
    rows = {r["tm_id"]: r for r in inst.rows()}
    by_lfn = {r["tm_source_lfn"]: r for r in rows.values()}
    missing, direct, good = (by_lfn[req["source_lfn"]] for req in requests)
    assert good["tm_path"] == f"{A}>{B}>{C}" and missing["tm_path"] == f"{A}>{B}>{C}"
    assert direct["tm_path"] is None
    jobs = fts_jobs_by_row(fts.db)
    assert len(jobs[good["tm_id"]]) == 1  # its two hops are one job

    inst.run_until(lambda rows: all(r["tm_transfer_state"] in ("DONE", "RETRY", "FAILED") for r in rows),
                   components=("monitor", "reporter"))
    rows = {r["tm_id"]: r for r in inst.rows()}
    assert rows[good["tm_id"]]["tm_transfer_state"] == "DONE" and rows[direct["tm_id"]]["tm_transfer_state"] == "DONE"
    for req in requests[1:]:
        src = inst.local_path(req["source"], req["source_lfn"])
        assert inst.local_path(req["destination"], req["destination_lfn"]).read_bytes() == src.read_bytes()
    assert rows[good["tm_id"]]["tm_path"] == f"{A}>{B}>{C}"
    # the source was missing: the first hop failed, and the reason names it (not the unused hop's)
    failed = rows[missing["tm_id"]]
    assert failed["tm_transfer_state"] == "RETRY", failed
    assert failed["tm_transfer_failure_reason"].startswith(f"hop 1/2 ({A} -> {B}): "), failed
    assert "Unused hop" not in failed["tm_transfer_failure_reason"]
    assert inst.sandbox_entries() == {"monitor": 0, "reporter": 0, "submit": 0, "stage": 0}
    # the copy at B is removed once the last hop finished
    scratch = inst.local_path(B, f"/store/temp/aso/multihop/{good['tm_id']}/out_2.root")
    deadline = time.monotonic() + 15
    while scratch.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not scratch.exists()


def test_a_file_with_no_path_goes_retry_with_a_no_path_reason(tmp_path, pki, fts):
    inst, user = multihop_installation(tmp_path, fts, pki, links=((A, B),))
    res = inst.aso("topology", "path", A, C, check=False)
    assert res.returncode == 1 and res.stderr.startswith("NO_PATH: ")
    inst.inject(inst.make_requests([user], 2, links=[(A, C), (A, B)]))
    out = json.loads(inst.aso("transfer", "--json").stdout)
    assert out["no_path"] == 1 and out["retry"] == 1 and out["files"] == 1
    rows = {r["tm_destination"]: r for r in inst.rows()}
    assert rows[C]["tm_transfer_state"] == "RETRY"
    assert rows[C]["tm_transfer_failure_reason"].startswith(f"NO_PATH: no link or multi-hop path from {A} to {C}")
    assert rows[B]["tm_transfer_state"] == "SUBMITTED" and rows[B]["tm_path"] is None
    inst.run_until(lambda rows: {r["tm_destination"]: r["tm_transfer_state"] for r in rows}[B] == "DONE",
                   components=("monitor", "reporter"))
    assert all_in("DONE", "RETRY")(inst.rows())


def test_push_monitoring_reports_a_multihop_row_once_from_its_last_hop_or_its_failure(tmp_path, pki):
    from tests.brokers import rabbitmq, require
    from tests.pipeline.test_receiver import ReceiverProcess, _fts, _install

    broker = require(rabbitmq())
    with _fts(pki, tmp_path / "fts", broker.address, broker) as fts:
        inst = _install(tmp_path, fts, broker, "topology.default_distance=0", "fts.retry=-1")
        with_links(inst, [(A, B), (B, C)])
        (user,) = users_for(pki, inst, 1)
        receiver = ReceiverProcess(inst).start()
        try:
            inst.inject(inst.make_requests([user], 2, links=[(A, C)], missing=1))
            # no monitor pass: the messages alone end the rows
            inst.run_until(lambda rows: {r["tm_transfer_state"] for r in rows} == {"DONE", "RETRY"}, rounds=60,
                           components=("transfer", "reporter"), pause=0.3)
        finally:
            summary = receiver.stop()
    rows = {r["tm_transfer_state"]: r for r in inst.rows()}
    assert rows["RETRY"]["tm_transfer_failure_reason"].startswith(f"hop 1/2 ({A} -> {B}): ")
    assert summary["handed_over"] == {"FINISHED": 1, "FAILED": 1}
    assert summary["not_final"] >= 2  # the first hop that finished, and the hop left unused


def test_a_failed_second_hop_is_retried_whole_and_reuses_the_copy_at_the_intermediate_site(tmp_path, pki, fts):
    """The second hop (B -> C) cannot write its destination; the row goes RETRY with that
    hop's reason. Once C is fixed, the retry submits the whole path again, and its first hop
    finds the verified copy at B: the source at A is gone by then, so the file can only
    arrive through that reuse."""
    inst, user = multihop_installation(tmp_path, fts, pki)
    inst.config_path.write_text(inst.config_path.read_text().replace("[retry_manager]\n", "[retry_manager]\ncooloff = 0\n"))
    (request,) = inst.make_requests([user], 1, links=[(A, C)])
    destination = inst.local_path(C, request["destination_lfn"])
    blocker = destination.parent  # a file where the destination's folder must be: the copy cannot create it
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a folder")
    inst.inject([request])
    inst.run_until(all_in("RETRY", "FAILED"))
    (row,) = inst.rows()
    assert row["tm_transfer_state"] == "RETRY", row
    assert row["tm_transfer_failure_reason"].startswith(f"hop 2/2 ({B} -> {C}): "), row
    scratch = inst.local_path(B, f"/store/temp/aso/multihop/{row['tm_id']}/{destination.name}")
    source = inst.local_path(A, request["source_lfn"])
    assert scratch.read_bytes() == source.read_bytes()  # kept for a retry (cleanup waits 2 h)

    data = source.read_bytes()
    source.unlink()
    blocker.unlink()
    time.sleep(1.1)  # whole-second times: the cool-off of 0 s must have passed
    inst.run_until(all_in("DONE", "FAILED"), components=("retry-manager", "transfer", "monitor", "reporter"))
    (row,) = inst.rows()
    assert row["tm_transfer_state"] == "DONE", row
    assert destination.read_bytes() == data and row["tm_path"] == f"{A}>{B}>{C}"
    assert len(fts_jobs_by_row(fts.db)[row["tm_id"]]) == 2  # the first attempt and the retry, each one job
    deadline = time.monotonic() + 15
    while scratch.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not scratch.exists(), "the copy at B outlived the last hop"


def test_a_stale_copy_at_the_intermediate_site_is_replaced_not_a_dead_end(tmp_path, pki, fts):
    """A copy an earlier attempt left at B that no longer matches the file (a job retry
    rewrote it) is replaced by the next attempt's first hop, and the file arrives."""
    inst, user = multihop_installation(tmp_path, fts, pki)
    (request,) = inst.make_requests([user], 1, links=[(A, C)])
    from aso.validate import lfn_id

    name = request["destination_lfn"].rsplit("/", 1)[1]
    stale = inst.local_path(B, f"/store/temp/aso/multihop/{lfn_id(request['source_lfn'])}/{name}")
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an older version of the file")
    inst.inject([request])
    inst.run_until(all_in("DONE", "RETRY", "FAILED"))
    (row,) = inst.rows()
    assert row["tm_transfer_state"] == "DONE", row
    source = inst.local_path(A, request["source_lfn"]).read_bytes()
    assert inst.local_path(C, request["destination_lfn"]).read_bytes() == source
