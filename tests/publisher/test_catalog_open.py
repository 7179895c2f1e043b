"""Several publishers (one per host) opening a new shared catalog at the same instant."""

from __future__ import annotations

import multiprocessing
import threading

from aso.catalogs.base import Block, CatalogFile
from aso.catalogs.local import LocalCatalog


def _open(url: str, barrier) -> None:
    barrier.wait(timeout=30)
    LocalCatalog(url).close()


def test_publishers_creating_one_catalog_at_once(tmp_path):
    # Before the tables were created with retries, most rounds had a process failing with
    # "table datasets already exists".
    ctx = multiprocessing.get_context("fork")
    for round_no in range(3):
        url = f"sqlite:///{tmp_path / f'catalog-{round_no}.db'}"
        barrier = ctx.Barrier(4)
        procs = [ctx.Process(target=_open, args=(url, barrier)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=60)
        assert [p.exitcode for p in procs] == [0, 0, 0, 0]
        catalog = LocalCatalog(url)
        assert catalog.listing() == []
        catalog.close()


def _publish(catalog: LocalCatalog, who: str, dataset: str, round_no: int) -> None:
    for n in range(5):
        files = [CatalogFile(f"/store/user/alice/{who}/r{round_no}_{n}_{i}.root", 10, "00000001") for i in range(3)]
        assert catalog.publish_block(Block(dataset, f"{dataset}#{who}-{n}", files))


def _publishing_process(url: str, barrier, who: str, dataset: str, round_no: int) -> None:
    catalog = LocalCatalog(url)
    barrier.wait(timeout=30)
    try:
        _publish(catalog, who, dataset, round_no)
    finally:
        catalog.close()


def test_threads_and_processes_publish_the_first_blocks_of_a_dataset_at_once(tmp_path):
    # Two threads publishing a new dataset's first blocks both found the dataset missing,
    # and the second's insert failed (its block went to RETRY); threads now take turns,
    # and a process waits for the write lock from the start of its block's transaction.
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    ctx = multiprocessing.get_context("fork")
    catalog = LocalCatalog(url)
    try:
        for round_no in range(3):
            dataset = f"/Primary/alice-round{round_no}-v1/USER"
            barrier = ctx.Barrier(3)
            procs = [ctx.Process(target=_publishing_process, args=(url, barrier, f"p{p}", dataset, round_no))
                     for p in (1, 2)]
            for p in procs:
                p.start()
            errors: list[BaseException] = []

            def publish(who: str, dataset: str = dataset, round_no: int = round_no, errors: list = errors) -> None:
                try:
                    _publish(catalog, who, dataset, round_no)
                except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                    errors.append(exc)

            threads = [threading.Thread(target=publish, args=(f"t{t}",)) for t in range(4)]
            barrier.wait(timeout=30)
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
            for p in procs:
                p.join(timeout=60)
            assert not errors and [p.exitcode for p in procs] == [0, 0]
            assert len(catalog.dataset_files(dataset)) == (4 + 2) * 5 * 3
    finally:
        catalog.close()
