"""The documented large deployment end to end: ``aso server`` under gunicorn (several
workers, default request limits) on PostgreSQL, two ASO hosts (two installations with their
own worker names and sandboxes) sharing it, users with hundreds of files each so that every
bulk call is large, and publication into one shared catalog (issue 11, item 1)."""

from __future__ import annotations

from collections import Counter

from aso.catalogs import catalog_from_config
from aso.state import open_backend
from aso.state.shares import owner
from tests.pipeline.conftest import installation, users_for
from tests.pipeline.harness import Installation, fts_jobs_by_row
from tests.state.conftest import fresh_postgres
from tests.state.servers import start_gunicorn_server

FILES_PER_USER = 300


def test_two_hosts_on_gunicorn_and_postgresql(tmp_path, pki, fts, postgres_url):
    fresh_postgres(postgres_url)
    (tmp_path / "server").mkdir()
    server, url = start_gunicorn_server(tmp_path / "server", postgres_url)
    catalog_url = f"sqlite:///{tmp_path / 'catalog.db'}"
    common = (f"state.url={url}", 'state.token="service-token"', 'aso.instance="test"', "transfer.acquire_limit=120",
              f'publisher.catalog_url="{catalog_url}"', "publisher.max_files_per_block=40")
    try:
        host_a = installation(tmp_path / "a", fts, *common, 'aso.worker="host-a"')
        sites = {name: site.prefix for name, site in host_a.config.sites.items()}
        host_b = Installation(tmp_path / "b" / "aso", fts.url, f'fts.ca_dir="{fts.ca_dir}"', "transfer.max_files_per_job=50",
                              *common, 'aso.worker="host-b"', sites=sites)
        # the hosts share the users (rendezvous hashing): one user of each host's share,
        # so that both take part whatever names the users get
        picked: dict[str, str] = {}
        while len(picked) < 2:
            (user,) = users_for(pki, host_a, 1)
            picked.setdefault(owner(user, ["host-a", "host-b"]), user)
        users = sorted(picked.values())
        for user in users:
            host_b.add_proxy(user, pki.users[user].proxy_path)
        requests = host_a.make_requests(users, FILES_PER_USER)
        for r in requests:
            r["publish"] = 1
        host_a.inject(requests)
        service = open_backend(url, worker="test", token="service-token", instance="test")
        tasks = sorted({r["taskname"]: r["username"] for r in requests}.items())
        service.upsert_tasks([{"tm_taskname": t, "tm_username": u, "tm_task_status": "COMPLETED",
                               "tm_publish_name": f"/Big/{u}-v1/USER"} for t, u in tasks])
        service.put_file_metadata([{"lfn": r["destination_lfn"], "taskname": r["taskname"],
                                    "metadata": {"outdataset": f"/Big/{r['username']}-v1/USER"}} for r in requests])

        for _ in range(60):
            for host in (host_a, host_b):
                host.round("transfer", "monitor", "reporter", "publisher")
            rows = service.list_transfers(limit=100000)
            if {r["tm_transfer_state"] for r in rows} == {"DONE"} and {r["tm_publication_state"] for r in rows} == {"DONE"}:
                break
        rows = service.list_transfers(limit=100000)
        service.close()
    finally:
        server.stop()

    assert len(rows) == len(requests) == 2 * FILES_PER_USER
    assert Counter(r["tm_transfer_state"] for r in rows) == {"DONE": len(rows)}
    assert Counter(r["tm_publication_state"] for r in rows) == {"DONE": len(rows)}
    workers = Counter(r["tm_aso_worker"] for r in rows)
    assert set(workers) == {"host-a", "host-b"}, workers  # both hosts took part
    jobs = fts_jobs_by_row(fts.db)
    assert all(len(jobs[r["tm_id"]]) == 1 for r in rows)
    catalog = catalog_from_config(host_a.config)
    try:
        published = Counter(f["lfn"] for d in catalog.listing() for b in d["blocks"] for f in b["files"])
    finally:
        catalog.close()
    assert published == Counter(r["destination_lfn"] for r in requests)
    for host in (host_a, host_b):
        assert host.sandbox_entries() == {"monitor": 0, "reporter": 0, "submit": 0, "stage": 0}
