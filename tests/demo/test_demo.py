"""``aso demo`` as a newcomer runs it: a subprocess, nothing configured."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.procs import aso_command


def _demo(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(aso_command("demo", *args), capture_output=True, text=True, cwd=cwd, timeout=600)


def test_demo_200_files_all_done_and_published(tmp_path):
    done = _demo("--files", "200", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["ok"] and result["problems"] == []
    assert result["files"] == 200 and result["transfer_states"] == {"DONE": 200}
    flagged = result["publish_flagged"]
    assert 0 < flagged < 200
    assert result["publication_states"] == {"DONE": flagged, "NOT_REQUIRED": 200 - flagged}
    assert sum(d["files"] for d in result["catalog"]) == flagged
    assert len(result["catalog"]) == 3  # one dataset per user's publishing task
    assert result["directory"] is None and list(tmp_path.iterdir()) == []  # nothing left behind
    # RabbitMQ's STOMP listens on localhost (.ci/run): the files came through aso receiver
    assert result["completion_path"].startswith("messages over STOMP from 127.0.0.1:61613")
    assert result["received"] > 0


def test_demo_without_a_broker_polls_and_says_so(tmp_path):
    from tests.procs import free_port

    done = _demo("--files", "10", "--users", "1", "--broker", f"127.0.0.1:{free_port()}", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["ok"] and result["completion_path"].startswith("polling (no STOMP broker answered at 127.0.0.1:")
    assert result["received"] == 0
    none = json.loads(_demo("--files", "3", "--users", "1", "--broker", "none", "--json", cwd=tmp_path).stdout)
    assert none["ok"] and none["completion_path"] == "polling (no broker asked for)"


def test_demo_keep_leaves_a_working_installation(tmp_path):
    keep = tmp_path / "kept"
    done = _demo("--files", "12", "--users", "2", "--keep", str(keep), "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["directory"] == str(keep.resolve())
    config = keep / "aso.toml"
    status = subprocess.run(aso_command("--config", str(config), "status", "--json"), capture_output=True, text=True)
    assert status.returncode == 0, status.stderr
    counts = json.loads(status.stdout)
    assert sum(e["count"] for e in counts if e["transfer_state"] == "DONE") == 12
    catalog = subprocess.run(aso_command("--config", str(config), "catalog", "list", "--json"), capture_output=True, text=True)
    assert sum(len(b["files"]) for d in json.loads(catalog.stdout) for b in d["blocks"]) == 6
    # every destination file is really there and matches its source, wherever that was
    sites = keep / "sites"
    sources = {p.relative_to(p.parents[3]): p for p in sites.glob("*/store/temp/user/**/*.root")}
    copies = {p.relative_to(p.parents[3]): p for p in sites.glob("*/store/user/**/*.root")}
    assert len(sources) == len(copies) == 12 and set(sources) == set(copies)
    for rel, copy in copies.items():
        assert copy.read_bytes() == sources[rel].read_bytes()
    assert (keep / "demo.log").read_text().count("transfer:") >= 1


def test_demo_bad_options_change_nothing(tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "precious.txt").write_text("mine")
    refused = _demo("--files", "5", "--keep", str(busy), cwd=tmp_path)
    assert refused.returncode == 2 and "keep" in refused.stderr
    assert sorted(p.name for p in busy.iterdir()) == ["precious.txt"]
    zero = _demo("--files", "0", cwd=tmp_path)
    assert zero.returncode == 2 and "files" in zero.stderr
