"""Sandboxes: atomic entries, validated path parts, nothing half-written ever listed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from aso.errors import ValidationError
from aso.sandbox import Sandbox


def test_write_read_list_remove(tmp_path):
    box = Sandbox(tmp_path, "monitor")
    box.write("alice", "job-2", {"n": 2})
    box.write("alice", "job-1", {"n": 1})
    box.write("bob", "job-3", {"n": 3})
    assert box.users() == ["alice", "bob"]
    assert [(e.user, e.name) for e in box.entries()] == [("alice", "job-1"), ("alice", "job-2"), ("bob", "job-3")]
    assert [box.load(e) for e in box.entries("alice")] == [{"n": 1}, {"n": 2}]
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
    box.write("alice", "good", {"ok": True})
    (box.dir / "alice" / ".good.json.123.tmp").write_text('{"half')
    (box.dir / "alice" / "broken.json").write_text('{"half')
    entries = list(box.entries())
    assert [e.name for e in entries] == ["broken", "good"]
    assert [box.load(e) for e in entries] == [None, {"ok": True}]
    assert (box.dir / ".quarantine" / "alice" / "broken.json").read_text() == '{"half'
    assert [e.name for e in box.entries()] == ["good"]
    assert box.users() == ["alice"]


def test_a_writer_killed_mid_write_leaves_the_old_entry(tmp_path):
    box = Sandbox(tmp_path, "monitor")
    box.write("alice", "job", {"version": 1})
    # a child that starts replacing the entry with a large payload and is killed mid-write
    code = textwrap.dedent(f"""
        import json, os, signal, aso.sandbox as s
        real_dump = json.dump
        def dump_then_die(data, fh, **kw):
            fh.write('{{"version": 2, "pad": "' + 'x' * 100000)
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        s.json.dump = dump_then_die
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
