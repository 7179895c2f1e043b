"""Publisher rules on a real state backend (SQLite in process, and a real REST server)."""

from __future__ import annotations

import time

from aso.catalogs.base import Block, CatalogFile
from aso.components.publisher import NO_METADATA, block_name, run_publisher
from tests.publisher.helpers import DATASET, add_files, lfn, pub_states


def test_full_blocks_published_tail_waits(backend, catalog, settings):
    lfns = add_files(backend, "task_full", 25)
    summary = run_publisher(backend, catalog, settings)
    assert (summary.acquired, summary.blocks, summary.published, summary.waiting) == (25, 2, 20, 5)
    states = pub_states(backend, "task_full")
    assert sorted(states.values()).count("DONE") == 20
    assert sorted(states.values()).count("ACQUIRED") == 5
    held = catalog.dataset_files(DATASET)
    assert len(held) == 20 and len(set(held.values())) == 2
    rows = {r["tm_destination_lfn"]: r for r in backend.list_transfers(task="task_full")}
    for name in lfns:
        if name in held:
            assert rows[name]["tm_dbs_blockname"] == held[name]
    assert backend.get_task("task_full")["tm_last_publication"] is not None
    # A second pass at the same moment publishes nothing new: the tail is still not due.
    again = run_publisher(backend, catalog, settings)
    assert (again.blocks, again.waiting) == (0, 5)


def test_tail_closed_when_task_final(backend, catalog, settings):
    add_files(backend, "task_final", 7, task_status="COMPLETED")
    summary = run_publisher(backend, catalog, settings)
    assert (summary.blocks, summary.published, summary.waiting) == (1, 7, 0)
    assert set(pub_states(backend, "task_final").values()) == {"DONE"}


def test_tail_closed_by_time_since_last_publication(backend, catalog, settings):
    add_files(backend, "task_time", 13)
    first = run_publisher(backend, catalog, settings)
    assert (first.published, first.waiting) == (10, 3)
    last = backend.get_task("task_time")["tm_last_publication"]
    assert abs(last - time.time()) < 60
    not_yet = run_publisher(backend, catalog, settings, now=last + settings.block_closure_timeout - 5)
    assert not_yet.waiting == 3 and not_yet.published == 0
    due = run_publisher(backend, catalog, settings, now=last + settings.block_closure_timeout + 5)
    assert (due.published, due.waiting) == (3, 0)
    assert set(pub_states(backend, "task_time").values()) == {"DONE"}


def test_never_published_task_waits_from_its_oldest_file(backend, catalog, settings):
    # CRAB forced every tail of a task without a previous publication at once; we don't.
    add_files(backend, "task_new", 4)
    now = int(time.time())
    assert run_publisher(backend, catalog, settings, now=now).waiting == 4
    assert backend.get_task("task_new")["tm_last_publication"] is None
    due = run_publisher(backend, catalog, settings, now=now + settings.block_closure_timeout + 60)
    assert due.published == 4
    assert backend.get_task("task_new")["tm_last_publication"] is not None


def test_expiration_publishes_and_fails_what_cannot_be(backend, catalog, settings):
    add_files(backend, "task_exp", 3)
    # One of the files was already published by someone else in another dataset: the
    # catalog refuses the block; expired files are failed, not retried.
    catalog.publish_block(
        Block("/Other/x-v1/USER", block_name("/Other/x-v1/USER", [lfn("task_exp", 0)]), [CatalogFile(lfn("task_exp", 0), 1, "00000001")])
    )
    summary = run_publisher(backend, catalog, settings, now=int(time.time()) + settings.expiration + 60)
    assert summary.failed == 3 and summary.retry == 0
    rows = backend.list_transfers(task="task_exp")
    assert {r["tm_publication_state"] for r in rows} == {"FAILED"}
    assert all("already in the catalog" in r["tm_publication_failure_reason"] for r in rows)


def test_expiration_alone_publishes_tail(backend, catalog, settings):
    add_files(backend, "task_exp2", 2)
    summary = run_publisher(backend, catalog, settings, now=int(time.time()) + settings.expiration + 60)
    assert summary.published == 2


def test_catalog_refusal_retries_then_fails(local_backend, catalog, settings):
    backend = local_backend
    add_files(backend, "task_retry", 2, task_status="COMPLETED")
    catalog.publish_block(
        Block("/Other/x-v1/USER", block_name("/Other/x-v1/USER", [lfn("task_retry", 1)]), [CatalogFile(lfn("task_retry", 1), 1, "00000001")])
    )
    # CRAB's rule: a row retried ``count`` times fails when count + 1 > max_retry, so
    # max_retry = 3 means three RETRYs and the fourth failure is final
    for attempt in range(1, settings.retry.max_retry + 1):
        summary = run_publisher(backend, catalog, settings)
        assert summary.retry == 2, attempt
        rows = backend.list_transfers(task="task_retry")
        assert {r["tm_publication_state"] for r in rows} == {"RETRY"}
        assert {r["tm_publication_retry_count"] for r in rows} == {attempt}
    last = run_publisher(backend, catalog, settings)
    assert last.failed == 2
    assert {r["tm_publication_state"] for r in backend.list_transfers(task="task_retry")} == {"FAILED"}


def test_missing_metadata_fails_with_reason(backend, catalog, settings):
    add_files(backend, "task_meta", 3, metadata=False, task_status="COMPLETED")
    summary = run_publisher(backend, catalog, settings)
    assert summary.failed == 3 and summary.published == 0
    rows = backend.list_transfers(task="task_meta")
    assert {r["tm_publication_state"] for r in rows} == {"FAILED"}
    assert {r["tm_publication_failure_reason"] for r in rows} == {NO_METADATA}
    assert catalog.dataset_files(DATASET) == {}


def test_files_already_in_catalog_are_not_published_again(backend, catalog, settings):
    lfns = add_files(backend, "task_held", 12, task_status="COMPLETED")
    existing = Block(DATASET, block_name(DATASET, lfns[:3]), [CatalogFile(x, 1000, "00000001") for x in lfns[:3]])
    assert catalog.publish_block(existing) is True
    summary = run_publisher(backend, catalog, settings)
    assert (summary.already_in_catalog, summary.published, summary.blocks) == (3, 9, 1)
    held = catalog.dataset_files(DATASET)
    assert len(held) == 12
    assert {held[x] for x in lfns[:3]} == {existing.name}
    rows = {r["tm_destination_lfn"]: r for r in backend.list_transfers(task="task_held")}
    assert all(rows[x]["tm_dbs_blockname"] == existing.name for x in lfns[:3])


def test_several_users_and_tasks(local_backend, catalog, settings):
    add_files(local_backend, "task_u1", 10, user="alice")
    add_files(local_backend, "task_u2", 20, user="bob", dataset="/Primary/bob-Proc-v1/USER")
    summary = run_publisher(local_backend, catalog, settings)
    assert (summary.tasks, summary.blocks, summary.published) == (2, 3, 30)
    assert len(catalog.dataset_files("/Primary/bob-Proc-v1/USER")) == 20


def test_local_catalog_rejects_bad_blocks(catalog):
    import pytest

    from aso.errors import ValidationError

    with pytest.raises(ValidationError, match="files"):
        catalog.publish_block(Block(DATASET, f"{DATASET}#x", []))
    with pytest.raises(ValidationError, match="block"):
        catalog.publish_block(Block(DATASET, "/Other/x/USER#x", [CatalogFile("/store/a.root", 1, "00000001")]))
    assert catalog.listing() == []


def test_a_row_with_an_lfn_outside_the_rule_fails_alone(backend, catalog, settings):
    # A row stored before the LFN rule was tightened: it fails on its own and never reaches
    # the catalog, and the task's valid rows are planned as usual.
    from aso.components.publisher import plan_task

    add_files(backend, "task_legacy", 3, task_status="COMPLETED")
    rows = backend.list_transfers(task="task_legacy")
    legacy = dict(rows[0], tm_id="f" * 56, tm_destination_lfn="/store/user/x/%2e%2e/escaped.root")
    plan = plan_task(backend, catalog, settings, "task_legacy", [*rows, legacy])
    assert set(plan.failures) == {"f" * 56} and "not publishable" in plan.failures["f" * 56]
    assert sum(len(ids) for _, ids in plan.blocks) == 3


def test_files_another_publisher_put_in_the_dataset_meanwhile_are_done_once(backend, catalog, settings):
    """A publisher this one took over from goes on for a moment and publishes some of the
    files after this one planned its block: the block is refused (its files would be in the
    catalog twice); those files are DONE in the other block, the rest RETRY with no retry
    counted and go in a block of their own on the next pass. Every file is in the catalog once."""
    from aso.components.publisher import execute_plan, plan_task

    lfns = add_files(backend, "task_race", 10, task_status="COMPLETED")
    backend.acquire_publication()
    rows = backend.acquired_publication()
    plan = plan_task(backend, catalog, settings, "task_race", rows)
    assert len(plan.blocks) == 1
    theirs = Block(DATASET, block_name(DATASET, lfns[:4]), [CatalogFile(x, 1000, "00000001") for x in lfns[:4]])
    assert catalog.publish_block(theirs) is True  # the other publisher, between plan and publish

    summary = execute_plan(backend, catalog, settings, plan)
    assert (summary.already_in_catalog, summary.retry, summary.published, summary.failed) == (4, 6, 0, 0)
    states = {r["tm_destination_lfn"]: r for r in backend.list_transfers(task="task_race")}
    assert all(states[x]["tm_publication_state"] == "DONE" and states[x]["tm_dbs_blockname"] == theirs.name
               for x in lfns[:4])
    assert all(states[x]["tm_publication_state"] == "RETRY" and states[x]["tm_publication_retry_count"] == 0
               for x in lfns[4:])

    again = run_publisher(backend, catalog, settings)
    assert (again.published, again.failed) == (6, 0)
    held = catalog.dataset_files(DATASET)
    assert sorted(held) == sorted(lfns)
    assert {r["tm_publication_state"] for r in backend.list_transfers(task="task_race")} == {"DONE"}


def test_a_pass_reads_its_rows_a_page_of_whole_users_at_a_time(backend, catalog, settings):
    # pages of 10 rows: u1 and u2 fill one with 3 rows of u3, who starts the next page
    # whole instead; u3 has more rows than a page, so this pass publishes a page of them
    sizes = {"u1": 3, "u2": 4, "u3": 25, "u4": 2}
    for user, n in sizes.items():
        add_files(backend, f"task_{user}", n, user=user, task_status="COMPLETED", dataset=f"/Primary/{user}-Proc-v1/USER")
    seen = []
    summary = run_publisher(backend, catalog, settings, page_rows=10, progress=lambda d, t: seen.append((d, t)))
    assert summary.acquired == 34
    assert summary.published == 3 + 4 + 10 + 2
    assert {u: sorted(set(pub_states(backend, f"task_{u}").values())) for u in sizes} == {
        "u1": ["DONE"], "u2": ["DONE"], "u3": ["ACQUIRED", "DONE"], "u4": ["DONE"]}
    assert seen[-1] == (4, 4)  # every user of the pass, done
    # the rest of u3's rows, a page per pass, and nothing published twice
    assert run_publisher(backend, catalog, settings, page_rows=10).published == 10
    assert run_publisher(backend, catalog, settings, page_rows=10).published == 5
    assert set(pub_states(backend, "task_u3").values()) == {"DONE"}
    assert sum(len(catalog.dataset_files(f"/Primary/{u}-Proc-v1/USER")) for u in sizes) == 34
