"""Tape sites end to end, as an operator runs them, against a real ``aso fts-server`` (over
HTTPS) whose tape emulation holds the tape site's folder: (a) files from a tape site to a
disk site are staged (bring_online), then copied, and end DONE byte-identical, also over a
multi-hop path whose first hop leaves tape; (b) stage-in
requests are submitted by ``aso stager`` alone as staging-only jobs and end DONE, while
``aso transfer`` never takes them (over the REST state backend)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from aso.config import load_config
from tests.pipeline.conftest import installation, users_for
from tests.pipeline.harness import Installation, all_in
from tests.pki import fts_server_https
from tests.state.servers import start_state_server

TAPE, DISK, DEST, FAR = "T1_XX_Tape", "T2_XX_Source", "T2_YY_Dest", "T2_ZZ_Dest"


@pytest.fixture(scope="module")
def tape_fts(pki, tmp_path_factory):
    # recalls of 0.2 to 1 s: staging is seen (STAGING first) without slowing the tests
    base = tmp_path_factory.getbasetemp()
    with fts_server_https(pki, tmp_path_factory.mktemp("tape-fts"), "--workers", "8", "--per-link", "4",
                          "--tape-root", str(base / "tape"), "--staging-delay", "0.2", "1.0",
                          roots=[base]) as srv:
        yield srv


def with_tape_site(inst: Installation, tmp_path: Path, fts_url: str) -> None:
    folder = tmp_path.parent / "tape" / tmp_path.name  # under the service's tape root
    folder.mkdir(parents=True)
    with open(inst.config_path, "a") as fh:
        fh.write(f'\n[sites.{TAPE}]\nprefix = "{folder.as_uri()}"\nfts = "{fts_url}"\ntape = true\n')
    inst.config = load_config(str(inst.config_path))


def fts_jobs(db: Path, ids: set[str]) -> dict[str, dict]:
    """The service's jobs holding rows ``ids``: their staging parameters and files."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        jobs: dict[str, dict] = {}
        for f in conn.execute("SELECT f.job_id, f.source_surl, f.dest_surl, f.file_metadata, f.staging_start, "
                              "f.staging_finished, j.bring_online, j.copy_pin_lifetime FROM t_file f "
                              "JOIN t_job j ON j.job_id = f.job_id"):
            if json.loads(f["file_metadata"]).get("oracleId") not in ids:
                continue
            job = jobs.setdefault(f["job_id"], {"bring_online": f["bring_online"],
                                                "copy_pin_lifetime": f["copy_pin_lifetime"], "files": []})
            job["files"].append(dict(f))
        return jobs
    finally:
        conn.close()


def test_files_from_a_tape_site_are_staged_then_copied(tmp_path, pki, tape_fts):
    inst = installation(tmp_path, tape_fts)
    with_tape_site(inst, tmp_path, tape_fts.url)
    (user,) = users_for(pki, inst, 1)
    from_tape = inst.make_requests([user], 4, links=[(TAPE, DEST)], task_prefix="tape")
    from_disk = inst.make_requests([user], 2, links=[(DISK, DEST)], task_prefix="disk")
    inst.inject(from_tape + from_disk)
    out = json.loads(inst.aso("transfer", "--json").stdout)
    assert (out["files"], out["jobs"]) == (6, 2)
    rows = {r["tm_source_lfn"]: r for r in inst.rows()}
    tape_ids = {rows[r["source_lfn"]]["tm_id"] for r in from_tape}
    disk_ids = {rows[r["source_lfn"]]["tm_id"] for r in from_disk}
    [tape_job] = fts_jobs(tape_fts.db, tape_ids).values()
    [disk_job] = fts_jobs(tape_fts.db, disk_ids).values()
    assert (tape_job["bring_online"], tape_job["copy_pin_lifetime"]) == (43200, 172800)  # Rucio's defaults
    assert disk_job["bring_online"] in (None, -1) and disk_job["copy_pin_lifetime"] in (None, -1)

    inst.run_until(all_in("DONE"), components=("monitor", "reporter"))
    for req in from_tape + from_disk:
        assert (inst.local_path(req["destination"], req["destination_lfn"]).read_bytes()
                == inst.local_path(req["source"], req["source_lfn"]).read_bytes())
    [tape_job] = fts_jobs(tape_fts.db, tape_ids).values()
    assert all(f["staging_start"] and f["staging_finished"] for f in tape_job["files"])  # staged, then copied
    [disk_job] = fts_jobs(tape_fts.db, disk_ids).values()
    assert not any(f["staging_start"] for f in disk_job["files"])
    assert inst.sandbox_entries() == {"monitor": 0, "reporter": 0, "submit": 0, "stage": 0}


def test_a_multihop_path_from_tape_stages_its_first_hop(tmp_path, pki, tape_fts):
    # FTS3 never retries a multihop hop; the embedded service would, after retry_delay: not here
    inst = installation(tmp_path, tape_fts, "topology.default_distance=0", "fts.retry=-1")
    with_tape_site(inst, tmp_path, tape_fts.url)
    text = inst.config_path.read_text().replace(f"[sites.{DEST}]\n", f"[sites.{DEST}]\navailable_for_multihop = true\n")
    text += "".join(f'\n[[links]]\nsource = "{a}"\ndestination = "{b}"\n' for a, b in ((TAPE, DEST), (DEST, FAR)))
    inst.config_path.write_text(text)
    inst.config = load_config(str(inst.config_path))
    (user,) = users_for(pki, inst, 1)
    requests = inst.make_requests([user], 2, links=[(TAPE, FAR)], task_prefix="hops")
    inst.inject(requests)
    out = json.loads(inst.aso("transfer", "--json").stdout)
    assert (out["files"], out["jobs"]) == (2, 2)  # a multihop job per file
    ids = {r["tm_id"] for r in inst.rows()}
    jobs = fts_jobs(tape_fts.db, ids)
    assert len(jobs) == 2 and all(j["bring_online"] == 43200 and len(j["files"]) == 2 for j in jobs.values())
    inst.run_until(all_in("DONE"), components=("monitor", "reporter"))
    assert {r["tm_path"] for r in inst.rows()} == {f"{TAPE}>{DEST}>{FAR}"}
    for req in requests:
        assert (inst.local_path(FAR, req["destination_lfn"]).read_bytes()
                == inst.local_path(TAPE, req["source_lfn"]).read_bytes())
    for job in fts_jobs(tape_fts.db, ids).values():
        first, second = sorted(job["files"], key=lambda f: f["source_surl"].startswith(inst.config.site(DEST).prefix))
        assert first["staging_finished"] and not second["staging_start"]  # only the hop leaving tape stages


def stagein_requests(inst: Installation, user: str, n: int, site: str = TAPE) -> list[dict]:
    """Files already stored at ``site`` (under the user's own area) and their stage-in requests."""
    out = []
    for i in range(n):
        lfn = f"/store/user/{user}/raw/{site}/f_{i}.root"
        path = inst.local_path(site, lfn)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes([i]) * (1000 + i))
        out.append({"username": user, "taskname": f"221122_000000:{user}_stage", "source": site, "destination": site,
                    "source_lfn": lfn, "destination_lfn": lfn, "filesize": 1000 + i, "publish": 0,
                    "type": "stagein"})
    return out


def test_stageins_are_the_stagers_alone_and_end_done(tmp_path, pki, tape_fts):
    # over a real aso server (the REST request_type path); test (a) runs on the local backend,
    # and tests/state/test_stagein_contract.py splits acquisition on all three backends
    folder = tmp_path / "state-server"
    folder.mkdir()
    service, url = start_state_server(folder)
    try:
        inst = installation(tmp_path, tape_fts, f"state.url={url}", 'state.token="service-token"',
                            'aso.instance="test"')
        _stageins_end_done(inst, tmp_path, pki, tape_fts)
    finally:
        service.stop()


def _stageins_end_done(inst: Installation, tmp_path: Path, pki, tape_fts) -> None:
    with_tape_site(inst, tmp_path, tape_fts.url)
    (user,) = users_for(pki, inst, 1)
    stageins = stagein_requests(inst, user, 3)
    on_disk = stagein_requests(inst, user, 1, site=DEST)  # not a tape site: refused by the stager
    transfers = inst.make_requests([user], 2, links=[(DISK, DEST)])
    inst.inject(stageins + on_disk + transfers)
    before = {p: inst.local_path(r["source"], r["source_lfn"]).read_bytes()
              for p, r in enumerate(stageins)}

    out = json.loads(inst.aso("transfer", "--json").stdout)
    assert (out["acquired"], out["files"]) == (2, 2)  # the transfers only
    assert {r["tm_transfer_state"] for r in inst.rows() if r["tm_type"] == "stagein"} == {"NEW"}
    staged = json.loads(inst.aso("stager", "--json").stdout)
    assert (staged["acquired"], staged["files"], staged["jobs"], staged["failed"]) == (4, 3, 1, 1)

    inst.run_until(lambda rows: all(r["tm_transfer_state"] in ("DONE", "FAILED") for r in rows),
                   components=("monitor", "reporter"))
    rows = inst.rows()
    # the transfer pass never touched a stage-in: every one went to the stager's FTS jobs
    assert json.loads(inst.aso("transfer", "--json").stdout)["acquired"] == 0
    stage_rows = {r["tm_source_lfn"]: r for r in rows if r["tm_type"] == "stagein"}
    for req in stageins:
        assert stage_rows[req["source_lfn"]]["tm_transfer_state"] == "DONE"
    bad = stage_rows[on_disk[0]["source_lfn"]]
    assert bad["tm_transfer_state"] == "FAILED"
    assert bad["tm_transfer_failure_reason"].startswith(f"STAGEIN: site {DEST} is not a tape site")
    assert all(r["tm_transfer_state"] == "DONE" for r in rows if r["tm_type"] == "output")
    # staging only: one job, every file's source its destination, staged, the bytes untouched
    ids = {stage_rows[r["source_lfn"]]["tm_id"] for r in stageins}
    [job] = fts_jobs(tape_fts.db, ids).values()
    assert job["bring_online"] == 43200 and job["copy_pin_lifetime"] in (None, -1)
    assert all(f["source_surl"] == f["dest_surl"] and f["staging_finished"] for f in job["files"])
    for p, r in enumerate(stageins):
        assert inst.local_path(r["source"], r["source_lfn"]).read_bytes() == before[p]
    assert inst.sandbox_entries() == {"monitor": 0, "reporter": 0, "submit": 0, "stage": 0}
    status = json.loads(inst.aso("status", "--json").stdout)
    assert status["staging"]["stagein"] == {"DONE": 3, "FAILED": 1}
