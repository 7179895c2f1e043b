"""No block is published twice, whatever instant the publisher dies at."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter

import pytest

from aso.catalogs.local import LocalCatalog
from aso.components.publisher import plan_task, run_publisher
from aso.state import PublicationUpdate, open_backend
from tests.procs import aso_command
from tests.publisher.conftest import WORKER
from tests.publisher.helpers import DATASET, add_files


def _acquire_and_plan(backend, catalog, settings, task):
    backend.acquire_publication()
    rows = [r for r in backend.acquired_publication() if r["tm_taskname"] == task]
    return plan_task(backend, catalog, settings, task, rows)


def _blocks(catalog) -> list[dict]:
    return [b for ds in catalog.listing() for b in ds["blocks"]]


def test_crash_after_catalog_commit_before_state_update(backend, catalog, settings):
    add_files(backend, "task_crash1", 25, task_status="COMPLETED")
    plan = _acquire_and_plan(backend, catalog, settings, "task_crash1")
    assert len(plan.blocks) == 3
    # The pass dies right after the first block's catalog commit: the state never hears.
    first, first_ids = plan.blocks[0]
    assert catalog.publish_block(first) is True
    summary = run_publisher(backend, catalog, settings)
    assert summary.already_in_catalog == 10 and summary.published == 15
    blocks = _blocks(catalog)
    assert len(blocks) == 3
    assert sorted(len(b["files"]) for b in blocks) == [5, 10, 10]
    rows = {r["tm_id"]: r for r in backend.list_transfers(task="task_crash1")}
    assert {r["tm_publication_state"] for r in rows.values()} == {"DONE"}
    assert {rows[i]["tm_dbs_blockname"] for i in first_ids} == {first.name}


def test_crash_between_state_updates_of_two_blocks(backend, catalog, settings):
    add_files(backend, "task_crash2", 20, task_status="COMPLETED")
    plan = _acquire_and_plan(backend, catalog, settings, "task_crash2")
    (b1, ids1), (b2, _ids2) = plan.blocks
    catalog.publish_block(b1)
    backend.update_publication([PublicationUpdate(id=i, state="DONE", block_name=b1.name) for i in ids1])
    catalog.publish_block(b2)
    # dies here: block 2 in the catalog, its rows still ACQUIRED
    summary = run_publisher(backend, catalog, settings)
    assert (summary.already_in_catalog, summary.published, summary.blocks) == (10, 0, 0)
    assert len(_blocks(catalog)) == 2
    assert {r["tm_publication_state"] for r in backend.list_transfers(task="task_crash2")} == {"DONE"}


def test_crash_before_catalog_commit(backend, catalog, settings):
    add_files(backend, "task_crash3", 10, task_status="COMPLETED")
    _acquire_and_plan(backend, catalog, settings, "task_crash3")  # planned, then died
    summary = run_publisher(backend, catalog, settings)
    assert summary.published == 10 and len(_blocks(catalog)) == 1


def test_same_block_twice_is_refused_by_name(catalog, local_backend, settings):
    add_files(local_backend, "task_twice", 10, task_status="COMPLETED")
    plan = _acquire_and_plan(local_backend, catalog, settings, "task_twice")
    block, _ = plan.blocks[0]
    assert catalog.publish_block(block) is True
    assert catalog.publish_block(block) is False
    assert len(_blocks(catalog)) == 1


def _catalog_blocks(path) -> int:
    """Blocks committed so far, read straight from the catalog file while the pass runs."""
    if not path.exists():
        return 0
    with sqlite3.connect(path, timeout=5) as conn:
        try:
            return conn.execute("SELECT count(*) FROM blocks").fetchone()[0]
        except sqlite3.OperationalError:
            return 0  # tables not created yet


@pytest.mark.parametrize("kill_after_blocks", [1, 60, 250])
def test_sigkill_real_process_then_rerun(tmp_path, kill_after_blocks):
    """Run ``aso publisher`` as a process, SIGKILL it once it has committed some blocks,
    then run it again to the end: every file in exactly one block, every row DONE."""
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    catalog_path = tmp_path / "catalog.db"
    backend = open_backend(state_url, worker=WORKER)
    files = 2000
    add_files(backend, "task_kill", files, task_status="COMPLETED")
    config = tmp_path / "aso.toml"
    config.write_text(
        f'[aso]\nworker = "{WORKER}"\nlock_dir = "{tmp_path / "locks"}"\n'
        f'[state]\nurl = "{state_url}"\n'
        f'[publisher]\ncatalog_url = "sqlite:///{catalog_path}"\nmax_files_per_block = 5\nthreads = 1\n'
    )
    cmd = aso_command("--config", str(config), "publisher", "--json")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while proc.poll() is None and _catalog_blocks(catalog_path) < kill_after_blocks and time.monotonic() < deadline:
        time.sleep(0.002)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL, "the pass ended before it could be killed"
    killed_at = _catalog_blocks(catalog_path)
    assert kill_after_blocks <= killed_at < files // 5
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["blocks"] == files // 5 - killed_at
    catalog = LocalCatalog(f"sqlite:///{catalog_path}")
    try:
        held = catalog.dataset_files(DATASET)
        blocks = _blocks(catalog)
    finally:
        catalog.close()
    assert len(held) == files
    assert Counter(len(b["files"]) for b in blocks) == {5: files // 5}
    assert len({b["block"] for b in blocks}) == files // 5
    rows = backend.list_transfers(task="task_kill", limit=files)
    assert {r["tm_publication_state"] for r in rows} == {"DONE"}
    assert all(r["tm_dbs_blockname"] == held[r["tm_destination_lfn"]] for r in rows)
    backend.close()
