"""Sandboxes: atomic entries, validated path parts, nothing half-written ever listed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from aso.errors import ValidationError
from aso.sandbox import Sandbox


def _job(n: int) -> dict:
    """A monitor entry of the shape the transfer component writes."""
    return {"job_id": f"job-{n}", "user": "alice", "endpoint": "https://fts:8446", "submitted": n, "files": {},
            "reported": [], "batches": 0, "last_progress": n}


def test_write_read_list_remove(tmp_path):
    box = Sandbox(tmp_path, "monitor")
    box.write("alice", "job-2", _job(2))
    box.write("alice", "job-1", _job(1))
    box.write("bob", "job-3", {"n": 3})
    assert box.users() == ["alice", "bob"]
    assert [(e.user, e.name) for e in box.entries()] == [("alice", "job-1"), ("alice", "job-2"), ("bob", "job-3")]
    assert [box.load(e) for e in box.entries("alice")] == [_job(1), _job(2)]
    assert box.read("bob", "job-3") == {"n": 3}
    box.write("bob", "job-3", {"n": 33})  # replaced whole
    assert box.read("bob", "job-3") == {"n": 33}
    assert box.remove("bob", "job-3") and not box.remove("bob", "job-3")
    assert box.count() == 2


@pytest.mark.parametrize("user,name,field", [
    ("..", "job", "user"), ("a/b", "job", "user"), ("alice", "../x", "monitor entry name"),
    ("alice", "a/b", "monitor entry name"), ("alice", ".hidden", "monitor entry name"), ("alice", "", "monitor entry name"),
])
def test_path_parts_are_validated(tmp_path, user, name, field):
    box = Sandbox(tmp_path, "monitor")
    with pytest.raises(ValidationError) as err:
        box.write(user, name, {})
    assert err.value.field == field
    assert not any(tmp_path.rglob("*.json"))


def test_temporaries_are_never_listed_and_bad_entries_are_quarantined(tmp_path):
    box = Sandbox(tmp_path, "reporter")
    good = {"job_id": "j", "files": [{"id": "x", "state": "FINISHED", "reason": None}]}
    box.write("alice", "good", good)
    (box.dir / "alice" / ".good.json.123.tmp").write_text('{"half')
    (box.dir / "alice" / "broken.json").write_text('{"half')
    entries = list(box.entries())
    assert [e.name for e in entries] == ["broken", "good"]
    assert [box.load(e) for e in entries] == [None, good]
    assert (box.dir / ".quarantine" / "alice" / "broken.json").read_text() == '{"half'
    assert [e.name for e in box.entries()] == ["good"]
    assert box.users() == ["alice"]


def test_a_writer_killed_mid_write_leaves_the_old_entry(tmp_path):
    box = Sandbox(tmp_path, "monitor")
    box.write("alice", "job", {"version": 1})
    # a child that starts replacing the entry with a large payload and is killed mid-write
    code = textwrap.dedent(f"""
        import os, signal, aso.sandbox as s
        # half of a large payload reaches the temporary file; the process dies before its fsync
        s._dumps = lambda data: '{{"version": 2, "pad": "' + 'x' * 100000
        def die(fd):
            os.kill(os.getpid(), signal.SIGKILL)
        s.os.fsync = die
        s.Sandbox({str(tmp_path)!r}, "monitor").write("alice", "job", {{"version": 2}})
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == -9
    assert box.read("alice", "job") == {"version": 1}
    assert [e.name for e in box.entries()] == ["job"]
    leftovers = [p.name for p in (box.dir / "alice").iterdir() if p.name.startswith(".")]
    assert leftovers and all(name.endswith(".tmp") for name in leftovers)


def test_unknown_kind(tmp_path):
    with pytest.raises(ValueError):
        Sandbox(tmp_path, "elsewhere")
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("kind,content", [
    ("monitor", "[]"), ("monitor", '{"job_id": "j"}'), ("reporter", "{}"), ("reporter", '{"job_id": "j", "files": [5]}'),
    ("submit", '{"chunks": 5}'), ("submit", '{"chunks": [{"sid": "s", "endpoint": "e", "transfers": [{}]}]}'),
    ("submit", "null"),
])
def test_an_entry_of_the_wrong_shape_is_quarantined_with_an_error_line(tmp_path, caplog, kind, content):
    box = Sandbox(tmp_path, kind)
    (box.dir / "alice").mkdir(parents=True)
    (box.dir / "alice" / "bad.json").write_text(content)
    (entry,) = box.entries()
    with caplog.at_level("ERROR", logger="aso.sandbox"):
        assert box.load(entry) is None
    assert "alice/bad" in caplog.text and "wrong shape" in caplog.text
    assert (box.dir / ".quarantine" / "alice" / "bad.json").read_text() == content
    assert list(box.entries()) == []


def test_what_cannot_be_read_as_an_entry_is_quarantined(tmp_path, caplog):
    """A folder or a FIFO where an entry should be (root reads any file, so these are how an
    unreadable entry shows up for root), and names no component could use, are moved aside."""
    box = Sandbox(tmp_path, "reporter")
    folder = box.dir / "alice"
    (folder / "a-folder.json").mkdir(parents=True)
    os.mkfifo(folder / "a-fifo.json")
    (folder / "bad name.json").write_text("{}")
    (box.dir / "bad user").mkdir()
    good = {"job_id": "j", "files": []}
    box.write("alice", "good", good)
    with caplog.at_level("ERROR", logger="aso.sandbox"):
        entries = list(box.entries())
    assert [(e.user, e.name) for e in entries] == [("alice", "good")]
    assert box.load(entries[0]) == good
    quarantined = sorted(p.name for p in (box.dir / ".quarantine" / "alice").iterdir())
    assert quarantined == ["a-fifo.json", "a-folder.json", "bad name.json"]
    assert (box.dir / ".quarantine" / "bad user").is_dir()
    for name in ("alice/a-folder", "alice/a-fifo", "alice/bad name", "'bad user'"):
        assert name in caplog.text
    assert box.users() == ["alice"]


def test_a_second_bad_entry_of_the_same_name_does_not_replace_the_first(tmp_path):
    box = Sandbox(tmp_path, "reporter")
    for content in ("[1]", "[2]"):
        (box.dir / "alice").mkdir(parents=True, exist_ok=True)
        (box.dir / "alice" / "bad.json").write_text(content)
        (entry,) = box.entries()
        assert box.load(entry) is None
    kept = sorted(p.read_text() for p in (box.dir / ".quarantine" / "alice").iterdir())
    assert kept == ["[1]", "[2]"]


def test_an_unwritable_sandbox_raises_one_clear_error(tmp_path):
    from aso.sandbox import SandboxError

    (tmp_path / "monitor").write_text("a file where the monitor folder should be")
    box = Sandbox(tmp_path, "monitor")
    with pytest.raises(SandboxError) as err:
        box.write("alice", "job", _job(1))
    assert str(tmp_path / "monitor" / "alice" / "job.json") in str(err.value)


def test_several_entries_written_and_removed_together(tmp_path):
    from aso.components.handoffs import MonitorEntry

    box = Sandbox(tmp_path, "monitor")
    box.write("alice", "job-1", _job(0))  # replaced whole by the batch
    jobs = [(f"job-{n}", MonitorEntry.from_json(_job(n))) for n in (1, 2, 3)]
    box.write_records("alice", jobs)
    box.write_records("alice", [])  # nothing to write: no folder touched
    assert [box.read("alice", name) for name, _ in jobs] == [_job(1), _job(2), _job(3)]
    assert not [p for p in (box.dir / "alice").iterdir() if p.name.startswith(".")]
    assert box.remove_many("alice", ["job-1", "job-3", "job-9"]) == 2
    assert [e.name for e in box.entries()] == ["job-2"]
    with pytest.raises(TypeError):
        box.write_records("alice", [("job-4", _job(4))])  # a dict, not the kind's record
    with pytest.raises(ValidationError):
        box.write_records("alice", [("../x", jobs[0][1])])
    assert [e.name for e in box.entries()] == ["job-2"]


def test_a_batch_that_cannot_be_written_leaves_no_temporaries(tmp_path):
    from aso.components.handoffs import MonitorEntry
    from aso.sandbox import SandboxError

    box = Sandbox(tmp_path, "monitor")
    (box.dir / "alice" / "job-2.json").mkdir(parents=True)  # a folder where an entry goes: rename fails
    with pytest.raises(SandboxError) as err:
        box.write_records("alice", [(f"job-{n}", MonitorEntry.from_json(_job(n))) for n in (1, 2, 3)])
    assert "monitor/alice" in str(err.value)
    assert not [p for p in (box.dir / "alice").iterdir() if p.name.startswith(".")]
    assert box.read("alice", "job-1") == _job(1)  # written before the failure: whole
