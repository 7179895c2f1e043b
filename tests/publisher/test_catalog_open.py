"""Several publishers (one per host) opening a new shared catalog at the same instant."""

from __future__ import annotations

import multiprocessing

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
