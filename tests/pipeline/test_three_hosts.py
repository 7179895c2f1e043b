"""Three ASO hosts sharing one ``aso server`` (gunicorn, PostgreSQL), one ``aso fts-server``
copying real bytes between file:// sites, and one catalog, every component of every host
looping as a real process (issue 17). Whatever happens to a host, at the end every file is
DONE exactly once, byte-identical at its destination, published exactly once, and in no
more FTS jobs than its retries allow."""

from __future__ import annotations

import random
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest

from aso.state import open_backend
from aso.state.shares import owner, shares
from tests.pipeline.conftest import installation, users_for
from tests.pipeline.harness import Installation, fts_jobs_by_row
from tests.pipeline.hosts import (
    COMPONENTS,
    Host,
    fts_files_by_source,
    published_lfns,
    state_summary,
    stop_all,
    wait_until,
)
from tests.state.conftest import fresh_postgres
from tests.state.servers import start_gunicorn_server

USERS = 6
FILES_PER_TASK = 25  # two tasks per user: 300 files
SEED = 17
#: small, so a takeover comes soon, but several times the longest silence of a live host on a
#: loaded two-core machine (15 component processes start at once there)
HEARTBEAT_TIMEOUT = 6


@dataclass
class Cluster:
    hosts: list[Host]
    service: object
    requests: list[dict]
    catalog_url: str
    fts: object
    #: (what was waited for, seconds): where a run's time went
    phases: list = field(default_factory=list)

    def start(self) -> None:
        """Every host's components, then the files once every instance has heartbeat (so the
        work is shared from the first pass, not taken by whoever started first)."""
        for host in self.hosts:
            host.start()
        self.wait_live({h.name for h in self.hosts})
        self.hosts[0].installation.inject(self.requests)

    def wait_live(self, names: set[str]) -> None:
        want = {(n, c) for n in names for c in COMPONENTS}

        def live():
            return want <= {(i.worker, i.component) for i in self.service.instances(HEARTBEAT_TIMEOUT)
                            if i.live and i.state == "live"}

        self.wait(f"every component of {sorted(names)} heartbeating", live, timeout=90)

    def rows(self) -> list[dict]:
        return self.service.list_transfers(limit=100000)

    def finished(self) -> list[dict] | None:
        rows = self.rows()
        done = len(rows) == len(self.requests) and all(r["tm_transfer_state"] == "DONE" for r in rows) and all(
            r["tm_publication_state"] == "DONE" for r in rows if r["tm_publish"])
        return rows if done else None

    def wait(self, what: str, predicate, timeout: float):
        start = time.monotonic()
        try:
            value = wait_until(what, predicate, timeout, self.hosts)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nstate: {state_summary(self.rows())}\nphases: {self.phases}") from None
        self.phases.append((what, round(time.monotonic() - start, 1)))
        return value


@pytest.fixture
def cluster(tmp_path, pki, fts, postgres_url):
    fresh_postgres(postgres_url)
    (tmp_path / "server").mkdir()
    server, url = start_gunicorn_server(tmp_path / "server", postgres_url)
    hosts: list[Host] = []
    service = None
    try:
        catalog_url = f"sqlite:///{tmp_path / 'catalog.db'}"  # the one catalog all three publish into
        common = (f"state.url={url}", 'state.token="service-token"', 'aso.instance="test"', "transfer.acquire_limit=30",
                  f'publisher.catalog_url="{catalog_url}"', "publisher.max_files_per_block=20",
                  "retry_manager.cooloff=1", f"aso.heartbeat_timeout={HEARTBEAT_TIMEOUT}")
        first = installation(tmp_path / "host-a", fts, *common, 'aso.worker="host-a"')
        sites = {name: site.prefix for name, site in first.config.sites.items()}
        installs = [first] + [
            Installation(tmp_path / f"host-{n}" / "aso", fts.url, f'fts.ca_dir="{fts.ca_dir}"', "transfer.max_files_per_job=50",
                         *common, f'aso.worker="host-{n}"', sites=sites)
            for n in ("b", "c")]
        # USERS // 3 users of each host's share (rendezvous hashing of the user names), so
        # that every host has work whatever names the users get
        names = ["host-a", "host-b", "host-c"]
        picked: dict[str, list[str]] = {n: [] for n in names}
        while min(len(v) for v in picked.values()) < USERS // 3:
            (user,) = users_for(pki, first, 1)
            mine = picked[owner(user, names)]
            if len(mine) < USERS // 3:
                mine.append(user)
        users = sorted(u for v in picked.values() for u in v)
        for inst in installs[1:]:
            for user in users:
                inst.add_proxy(user, pki.users[user].proxy_path)
        requests = []
        for task in ("pub", "nopub"):
            batch = first.make_requests(users, FILES_PER_TASK, task_prefix=task)
            for r in batch:
                r["publish"] = int(task == "pub")
            requests += batch
        random.Random(SEED).shuffle(requests)  # users and tasks interleaved in injection order
        service = open_backend(url, worker="test", token="service-token", instance="test")
        tasks = sorted({r["taskname"]: r["username"] for r in requests}.items())
        service.upsert_tasks([{"tm_taskname": t, "tm_username": u, "tm_task_status": "COMPLETED",
                               "tm_publish_name": f"/Hosts/{u}-v1/USER"} for t, u in tasks])
        service.put_file_metadata([{"lfn": r["destination_lfn"], "taskname": r["taskname"],
                                    "metadata": {"outdataset": f"/Hosts/{r['username']}-v1/USER"}}
                                   for r in requests if r["publish"]])
        hosts = [Host(inst, f"host-{n}", interval=0.5) for inst, n in zip(installs, "abc", strict=True)]
        yield Cluster(hosts, service, requests, catalog_url, fts)
    finally:
        stop_all(hosts)
        if service is not None:
            service.close()
        server.stop()


def check_outcome(cluster: Cluster, rows: list[dict]) -> None:
    requests = cluster.requests
    first = cluster.hosts[0].installation
    # every file DONE exactly once in the state backend
    assert Counter(r["tm_destination_lfn"] for r in rows) == Counter(r["destination_lfn"] for r in requests)
    assert Counter(r["tm_transfer_state"] for r in rows) == {"DONE": len(requests)}
    # byte-identical at its destination
    for r in requests:
        source = first.local_path(r["source"], r["source_lfn"]).read_bytes()
        assert first.local_path(r["destination"], r["destination_lfn"]).read_bytes() == source, r["destination_lfn"]
    # every publishable file in the shared catalog exactly once, no other file there
    assert published_lfns(cluster.catalog_url) == Counter(r["destination_lfn"] for r in requests if r["publish"])
    # no file in two FTS jobs beyond its retries: per row id, and per source file
    jobs = fts_jobs_by_row(cluster.fts.db)
    by_source = fts_files_by_source(cluster.fts.db)
    for row in rows:
        allowed = 1 + row["tm_transfer_retry_count"]
        assert 1 <= len(jobs.get(row["tm_id"], [])) <= allowed, (row["tm_id"], jobs.get(row["tm_id"]))
        source = first.local_path(row["tm_source"], row["tm_source_lfn"]).as_uri()
        assert 1 <= by_source[source] <= allowed, (source, by_source[source])
    for host in cluster.hosts:
        assert host.down or host.running() and not host.exited(), f"{host.name}: components exited {host.exited()}"


@pytest.mark.parametrize("sandbox", ["deleted", "kept"])
def test_a_host_killed_mid_run_is_taken_over_and_comes_back(cluster, sandbox):
    """One host dies whole (SIGKILL to its process group) while it has files at FTS; with
    ``deleted`` its sandbox goes with it (a machine replaced), with ``kept`` its write-ahead
    records are still there when it comes back. The two others take its users over after
    ``heartbeat_timeout``; it returns later with the same config and takes its users back."""
    cluster.start()
    victim = cluster.hosts[-1]  # it owns a third of the users, as every host does

    def victim_in_flight():
        return any(r["tm_aso_worker"] == victim.name and r["tm_transfer_state"] == "SUBMITTED" for r in cluster.rows())

    cluster.wait(f"{victim.name} has files at FTS", victim_in_flight, timeout=45)
    victim.kill9()
    if sandbox == "deleted":
        shutil.rmtree(victim.sandbox)
    # the two others finish everything, the victim's unfinished rows included
    rows = cluster.wait("every file DONE and published without the killed host", cluster.finished, timeout=60)
    theirs = {u for u in shares(sorted({r["username"] for r in cluster.requests}),
                                [h.name for h in cluster.hosts])[victim.name]}
    taken = [r for r in rows if r["tm_username"] in theirs and r["tm_aso_worker"] != victim.name]
    assert taken, f"nothing of {victim.name}'s users was taken over: {state_summary(rows)}"

    # it comes back with the same config; a second wave of files shows it owns its users again
    victim.start()
    cluster.wait_live({victim.name})
    first = cluster.hosts[0].installation
    wave = first.make_requests(sorted({r["username"] for r in cluster.requests}), 4, task_prefix="wave2")
    first.inject(wave)
    cluster.requests += wave
    rows = cluster.wait("the second wave DONE with the host back", cluster.finished, timeout=45)
    check_outcome(cluster, rows)
    wave_lfns = {r["destination_lfn"] for r in wave}
    back = Counter(r["tm_aso_worker"] for r in rows if r["tm_destination_lfn"] in wave_lfns and r["tm_username"] in theirs)
    assert back == {victim.name: sum(1 for r in wave if r["username"] in theirs)}, back
    # every host took part (the other two own the rest of the second wave): no host idled
    assert set(Counter(r["tm_aso_worker"] for r in rows)) == {h.name for h in cluster.hosts}, state_summary(rows)
    print("phases:", cluster.phases)
    stop_all(cluster.hosts)
    for host in cluster.hosts:
        assert host.installation.sandbox_entries() == {"monitor": 0, "reporter": 0, "submit": 0, "stage": 0}, host.name
