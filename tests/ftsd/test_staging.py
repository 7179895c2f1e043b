"""Tape emulation and bring-online staging in a real ``aso fts-server`` (docs/tape.md).

Files under ``--tape-root`` are nearline until a bring-online job stages them; the robot's
delays are small here (fractions of a second) and drawn per path, so a test can pick a
file name whose delay is long or short with the same rule the service uses."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from aso.ftsd import jobs as fj
from aso.ftsd.errors import FtsHttpError
from aso.ftsd.staging import (
    BRING_ONLINE_TIMEOUT_REASON,
    MAX_STAGING_SECONDS,
    recall_delay,
    staging_seconds,
    starts_staging,
    tape_path,
)
from aso.messaging import fts3 as msg
from tests.ftsd.fts import plain_fts, transfer


def _epoch(text: str | None) -> float:
    assert text is not None
    return datetime.strptime(text, fj.TIME_FORMAT).replace(tzinfo=UTC).timestamp()


def _tape(tmp_path: Path, names: list[str], size: int = 4096) -> tuple[Path, list[Path]]:
    tape = tmp_path / "tape"
    tape.mkdir(exist_ok=True)
    files = []
    for i, name in enumerate(names):
        f = tape / name
        f.write_bytes(bytes([i % 251]) * size + name.encode())
        files.append(f)
    return tape, files


def _url(path: Path) -> str:
    return f"file://{path}"


def _server(tmp_path: Path, tape: Path, delay: tuple[float, float], *extra: str):
    return plain_fts(tmp_path / "fts", "--tape-root", str(tape), "--staging-delay", str(delay[0]), str(delay[1]),
                     *extra)


def _names_with_delay(tape: Path, low: float, high: float, delay: tuple[float, float], count: int,
                      prefix: str) -> list[str]:
    """File names whose recall takes between ``low`` and ``high`` seconds (the service's rule)."""
    out, i = [], 0
    while len(out) < count:
        name = f"{prefix}{i}.root"
        if low <= recall_delay(str(tape / name), *delay) <= high:
            out.append(name)
        i += 1
    return out


# -- the rules ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [-2, "10", "-1", 1.5, True, None, MAX_STAGING_SECONDS + 1, 10**30, [], {}])
def test_staging_seconds_takes_json_integers_from_minus_one(value):
    if value is None:
        assert staging_seconds(value, "bring_online") == -1
        return
    with pytest.raises(FtsHttpError) as err:
        staging_seconds(value, "copy_pin_lifetime")
    assert err.value.status == 400 and "copy_pin_lifetime" in str(err.value)


def test_staging_rules():
    assert staging_seconds(-1, "x") == -1 and staging_seconds(0, "x") == 0
    assert staging_seconds(MAX_STAGING_SECONDS, "x") == MAX_STAGING_SECONDS
    assert starts_staging(1, -1) and starts_staging(-1, 1) and not starts_staging(0, 0) and not starts_staging(-1, -1)
    # the same path, the same delay; different paths spread over [min, max]
    delays = [recall_delay(f"/tape/f{i}", 1.0, 3.0) for i in range(500)]
    assert delays == [recall_delay(f"/tape/f{i}", 1.0, 3.0) for i in range(500)]
    assert all(1.0 <= d <= 3.0 for d in delays) and min(delays) < 1.2 and max(delays) > 2.8
    assert recall_delay("/tape/x", 2.0, 2.0) == 2.0
    assert tape_path("file:///tape/a/b", ("/tape",)) == "/tape/a/b"
    assert tape_path("file:///disk/a", ("/tape",)) is None
    assert tape_path("https://host/tape/a", ("/tape",)) is None
    assert tape_path("file:///tape/a", ()) is None
    assert fj.job_state(["STAGING", "SUBMITTED"]) == "STAGING"
    assert fj.job_state(["STAGING", "ACTIVE"]) == "ACTIVE"
    assert fj.job_state(["STAGING", "NOT_USED"], multihop=True) == "STAGING"


def test_state_message_carries_the_staging_times():
    f = msg.FileOutcome(
        file_id=1, job_id="j", job_type="N", source="file:///t/a", destination="file:///d/a", source_se="file://",
        dest_se="file://", vo_name="vo", user_dn="/CN=u", activity="default", outcome="STAGING", reason=None,
        recoverable=False, retry=0, retry_max=0, start_time=None, finish_time=10.0, filesize=None, user_filesize=1,
        checksum="", file_metadata={}, job_metadata={}, submit_time=1.0, job_state="STAGING", file_state="STAGING",
        staging_start=2.5, staging_finished=None)
    body = msg.state_body(f, now=3.0)
    assert (body["staging_start"], body["staging_finished"], body["staging"]) == (2500, 0, "true")


# -- a real service ------------------------------------------------------------------------


def test_bring_online_job_stages_then_copies(tmp_path):
    tape, files = _tape(tmp_path, ["a.root", "b.root", "c.root"])
    out = tmp_path / "disk"
    out.mkdir()
    with _server(tmp_path, tape, (0.4, 0.8)) as fts:
        job_id = fts.submit([transfer(_url(f), _url(out / f.name)) for f in files],
                            bring_online=30, copy_pin_lifetime=60)
        job = fts.job(job_id)
        assert job["job_state"] == "STAGING"
        assert (job["bring_online"], job["copy_pin_lifetime"]) == (30, 60)
        staging = fts.files(job_id)
        assert {f["file_state"] for f in staging} == {"STAGING"}
        assert all(f["staging_start"] and f["staging_finished"] is None and f["staging_host"] for f in staging)
        hosts = fts.request("GET", "/status/hosts").json()
        assert sum(h["staging"] for h in hosts.values()) == 3

        assert fts.wait(job_id)["job_state"] == "FINISHED"
        asked = "file_state,staging_start,staging_finished,start_time"
        listed = fts.request("GET", f"/jobs/{job_id}?files={asked}").json()["files"]
        for f in listed + fts.files(job_id):
            assert f["file_state"] == "FINISHED"
            assert _epoch(f["staging_start"]) <= _epoch(f["staging_finished"]) <= _epoch(f["start_time"])
        for f in files:
            assert (out / f.name).read_bytes() == f.read_bytes()
        assert sum(h["staging"] for h in fts.request("GET", "/status/hosts").json().values()) == 0


def test_bring_online_timeout_fails_the_file_with_fts3s_reason(tmp_path):
    tape, files = _tape(tmp_path, ["slow.root"])
    with _server(tmp_path, tape, (2.0, 2.0)) as fts:
        job_id = fts.submit([transfer(_url(files[0]), _url(tmp_path / "slow.copy"))], bring_online=1)
        job = fts.wait(job_id, timeout=10)
        assert job["job_state"] == "FAILED"
        [f] = fts.files(job_id)
        assert f["file_state"] == "FAILED" and f["reason"] == BRING_ONLINE_TIMEOUT_REASON
        assert f["staging_start"] and f["staging_finished"] is None
        assert not (tmp_path / "slow.copy").exists()


def test_a_nearline_file_without_bring_online_fails_for_good(tmp_path):
    tape, files = _tape(tmp_path, ["cold.root"])
    with _server(tmp_path, tape, (0.1, 0.1)) as fts:
        job_id = fts.submit([transfer(_url(files[0]), _url(tmp_path / "cold.copy"))], retry=3, retry_delay=1)
        assert fts.wait(job_id)["job_state"] == "FAILED"
        [f] = fts.files(job_id)
        assert f["reason"].startswith("SOURCE [95] ") and "NEARLINE" in f["reason"]
        assert f["recoverable"] is False and f["retry"] == 0
        assert f["staging_start"] is None
        assert not (tmp_path / "cold.copy").exists()


def test_a_pin_keeps_the_file_online_then_it_is_evicted(tmp_path):
    tape, files = _tape(tmp_path, ["pinned.root"])
    src = _url(files[0])
    with _server(tmp_path, tape, (0.1, 0.1)) as fts:
        first = fts.submit([transfer(src, _url(tmp_path / "1.copy"))], bring_online=30, copy_pin_lifetime=2)
        assert fts.wait(first)["job_state"] == "FINISHED"
        staged_at = _epoch(fts.files(first)[0]["staging_finished"])
        # pinned: a job without bring_online reads it as a disk file
        second = fts.submit([transfer(src, _url(tmp_path / "2.copy"))])
        assert fts.wait(second)["job_state"] == "FINISHED"
        # the pin expires (2 s after staging; the robot sweeps at least every poll): nearline again
        time.sleep(max(0.0, staged_at + 3.5 - time.time()))
        third = fts.submit([transfer(src, _url(tmp_path / "3.copy"))])
        assert fts.wait(third)["job_state"] == "FAILED"
        assert "NEARLINE" in fts.files(third)[0]["reason"]
        # a new bring-online recalls it again
        fourth = fts.submit([transfer(src, _url(tmp_path / "4.copy"))], bring_online=30)
        assert fts.wait(fourth)["job_state"] == "FINISHED"
        assert _epoch(fts.files(fourth)[0]["staging_start"]) > staged_at
        assert (tmp_path / "4.copy").read_bytes() == files[0].read_bytes()


def test_requests_for_the_same_file_share_one_recall(tmp_path):
    tape, files = _tape(tmp_path, ["shared.root"])
    with _server(tmp_path, tape, (2.0, 2.0)) as fts:
        a = fts.submit([transfer(_url(files[0]), _url(tmp_path / "a.copy"))], bring_online=30)
        time.sleep(1.0)
        b = fts.submit([transfer(_url(files[0]), _url(tmp_path / "b.copy"))], bring_online=30)
        assert fts.wait(a)["job_state"] == fts.wait(b)["job_state"] == "FINISHED"
        fa, fb = fts.files(a)[0], fts.files(b)[0]
        # the second request joined the recall under way: both came online at the same moment,
        # 2 s after the first request (a recall of its own would have ended a second later;
        # FTS3's times are whole seconds)
        assert fa["staging_finished"] == fb["staging_finished"]
        assert _epoch(fb["staging_finished"]) - _epoch(fa["staging_start"]) <= 2


def test_a_staging_only_file_is_finished_once_staged_without_a_copy(tmp_path):
    tape, files = _tape(tmp_path, ["stagein.root"])
    before = {p.name for p in tape.iterdir()}
    mtime = files[0].stat().st_mtime_ns
    with _server(tmp_path, tape, (0.2, 0.2)) as fts:
        url = _url(files[0])
        job_id = fts.submit([transfer(url, url)], bring_online=30, copy_pin_lifetime=60)
        assert fts.wait(job_id)["job_state"] == "FINISHED"
        [f] = fts.files(job_id)
        assert f["staging_finished"] and f["tx_duration"] == 0
        # and the file is online now (pinned for 60 s): a copy without bring_online reads it
        copy = fts.submit([transfer(url, _url(tmp_path / "after.copy"))])
        assert fts.wait(copy)["job_state"] == "FINISHED"
    assert {p.name for p in tape.iterdir()} == before
    assert files[0].stat().st_mtime_ns == mtime


def test_staging_survives_a_killed_service(tmp_path):
    delay = (1.0, 2.0)
    tape = tmp_path / "tape"
    tape.mkdir()
    names = [f"k{i}.root" for i in range(20)]
    _, files = _tape(tmp_path, names)
    out = tmp_path / "disk"
    out.mkdir()
    with _server(tmp_path, tape, delay) as fts:
        job_id = fts.submit([transfer(_url(f), _url(out / f.name)) for f in files], bring_online=60,
                            copy_pin_lifetime=60)
        assert fts.job(job_id)["job_state"] == "STAGING"
        started = {f["file_id"]: f["staging_start"] for f in fts.files(job_id)}
        fts.kill9()
        time.sleep(0.3)
        fts.start()
        assert fts.wait(job_id, timeout=20)["job_state"] == "FINISHED"
        for f in fts.files(job_id):
            # the recall went on where it was: same start, online after its own delay
            assert f["staging_start"] == started[f["file_id"]]
            path = tape / Path(f["source_surl"]).name
            took = _epoch(f["staging_finished"]) - _epoch(f["staging_start"])
            assert took >= recall_delay(str(path), *delay) - 1.0
        for f in files:
            assert (out / f.name).read_bytes() == f.read_bytes()


def test_a_file_waiting_for_the_robot_holds_no_copy_slot(tmp_path):
    delay = (0.0, 4.0)
    tape = tmp_path / "tape"
    tape.mkdir()
    [slow] = _names_with_delay(tape, 3.5, 4.0, delay, 1, "slow")
    _, files = _tape(tmp_path, [slow])
    disk = tmp_path / "disk"
    disk.mkdir()
    for i in range(3):
        (disk / f"d{i}").write_bytes(b"x" * 1000)
    with _server(tmp_path, tape, delay, "--workers", "1", "--per-link", "1") as fts:
        staged = fts.submit([transfer(_url(files[0]), _url(tmp_path / "slow.copy"))], bring_online=60)
        plain = fts.submit([transfer(_url(disk / f"d{i}"), _url(disk / f"d{i}.copy")) for i in range(3)])
        assert fts.wait(plain, timeout=3)["job_state"] == "FINISHED"
        assert fts.job(staged)["job_state"] == "STAGING"
        assert fts.wait(staged, timeout=10)["job_state"] == "FINISHED"


def test_bad_staging_values_are_refused_naming_the_field(tmp_path):
    tape, files = _tape(tmp_path, ["x.root"])
    with _server(tmp_path, tape, (0.0, 0.0)) as fts:
        for field in ("bring_online", "copy_pin_lifetime"):
            for value in (-2, "60", 1.5, True, 10**20):
                resp = fts.request("POST", "/jobs", json={
                    "files": [transfer(_url(files[0]), _url(tmp_path / "y"))], "params": {field: value}})
                assert resp.status_code == 400, (field, value, resp.text)
                assert field in resp.json()["message"]
        assert fts.request("GET", "/jobs?state_in=STAGING,SUBMITTED,FINISHED,FAILED").json() == []


def test_a_job_canceled_while_staging_copies_nothing(tmp_path):
    tape, files = _tape(tmp_path, ["c0.root", "c1.root"])
    with _server(tmp_path, tape, (0.5, 0.5)) as fts:
        job_id = fts.submit([transfer(_url(f), _url(tmp_path / f"{f.name}.copy")) for f in files], bring_online=30)
        resp = fts.request("DELETE", f"/jobs/{job_id}")
        assert resp.status_code == 200 and resp.json()["job_state"] == "CANCELED"
        time.sleep(1.0)  # the recall ends meanwhile: nothing may start
        assert {f["file_state"] for f in fts.files(job_id)} == {"CANCELED"}
        assert not list(tmp_path.glob("*.copy"))


def test_tape_roots_and_delays_from_the_configuration(tmp_path):
    import subprocess

    from tests.procs import Service, aso_command, free_port

    tape, files = _tape(tmp_path, ["conf.root"])
    config = tmp_path / "aso.toml"
    config.write_text(f'[fts_server]\ntape_roots = ["{tape}"]\nstaging_delay_min = 0.1\nstaging_delay_max = 0.2\n')
    port = free_port()
    args = aso_command("--config", str(config), "fts-server", "--port", str(port), "--db", str(tmp_path / "c.db"),
                       "--root", str(tmp_path), "--poll-seconds", "0.2")
    service = Service(args, port, tmp_path / "c.log").start()
    try:
        http = requests.Session()
        body = {"files": [transfer(_url(files[0]), _url(tmp_path / "c.copy"))]}
        job_id = http.post(f"http://127.0.0.1:{port}/jobs", json=body, timeout=30).json()["job_id"]
        deadline = time.monotonic() + 20
        while (job := http.get(f"http://127.0.0.1:{port}/jobs/{job_id}", timeout=30).json())["job_state"] != "FAILED":
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
    finally:
        service.stop()
    assert "tape roots (from fts_server.tape_roots)" in (tmp_path / "c.log").read_text()
    # a maximum below the minimum is a one-line error, exit code 2
    config.write_text("[fts_server]\nstaging_delay_min = 3\nstaging_delay_max = 1\n")
    res = subprocess.run(aso_command("--config", str(config), "fts-server", "--port", str(free_port()),
                                     "--db", str(tmp_path / "d.db")), capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "staging_delay_max" in res.stderr


def test_tape_roots_default_to_the_tape_sites_file_prefixes(tmp_path):
    """With no tape_roots, the service takes the folders of the sites marked tape = true
    (and only those): a file there is nearline, a file at a disk site is not."""
    from tests.procs import Service, aso_command, free_port

    tape, (on_tape,) = _tape(tmp_path, ["site.root"])
    disk = tmp_path / "disk"
    disk.mkdir()
    on_disk = disk / "plain.root"
    on_disk.write_bytes(b"d" * 4096)
    config = tmp_path / "aso.toml"
    config.write_text(f'[sites.T1_TAPE]\nprefix = "{tape.as_uri()}"\nfts = "https://fts.invalid:8446"\ntape = true\n\n'
                      f'[sites.T2_DISK]\nprefix = "{disk.as_uri()}"\nfts = "https://fts.invalid:8446"\n\n'
                      '[monitor]\njob_timeout = 86400\n')
    port = free_port()
    args = aso_command("--config", str(config), "fts-server", "--port", str(port), "--db", str(tmp_path / "c.db"),
                       "--root", str(tmp_path), "--poll-seconds", "0.2")
    service = Service(args, port, tmp_path / "c.log").start()
    try:
        http = requests.Session()
        ends = {}
        for source in (on_tape, on_disk):
            body = {"files": [transfer(_url(source), _url(tmp_path / f"{source.name}.copy"))]}
            job_id = http.post(f"http://127.0.0.1:{port}/jobs", json=body, timeout=30).json()["job_id"]
            deadline = time.monotonic() + 20
            while (job := http.get(f"http://127.0.0.1:{port}/jobs/{job_id}?files=file_state,reason",
                                   timeout=30).json())["job_state"] not in ("FINISHED", "FAILED"):
                assert time.monotonic() < deadline, job
                time.sleep(0.05)
            ends[source.name] = job
    finally:
        service.stop()
    assert "tape roots (from the file:// prefixes of the tape sites in [sites])" in (tmp_path / "c.log").read_text()
    assert ends["site.root"]["job_state"] == "FAILED" and "NEARLINE" in ends["site.root"]["files"][0]["reason"]
    assert ends["plain.root"]["job_state"] == "FINISHED"
