"""A chaos run of the whole pipeline, as operators found its defects: every component in its
own loop (as overlapping cron jobs), SIGKILLs at random instants, the FTS service and the
state server killed and restarted, kills requested while submissions are pending; then a
drain, and the invariants that must hold whatever happened.

With ``push`` the FTS service publishes its completion messages to RabbitMQ and ``aso
receiver`` runs too, killed (SIGKILL) or stopped (SIGTERM) at random instants and started
again, with a durable subscription; the monitor is the safety net (``poll_after`` 3 s).

Seeded and bounded: the test suite runs a short one, ``benchmarks/chaos.py`` a long one.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aso.catalogs import catalog_from_config
from aso.state import open_backend
from tests.pipeline.harness import Installation, fts_jobs_by_row
from tests.pki import TestPki, fts_server_https
from tests.procs import aso_command
from tests.state.servers import start_state_server

COMPONENTS = ("transfer", "monitor", "reporter", "retry-manager", "publisher")
DATASET = "/Chaos/{user}-v1/USER"


@dataclass
class ChaosSettings:
    seed: int = 20261130
    users: int = 3
    files_per_user: int = 40
    seconds: float = 40.0
    #: chance that a pass still running after its random lifetime is SIGKILLed
    kill_chance: float = 0.6
    fts_restarts: int = 2
    state_restarts: int = 2
    #: tasks whose transfers are killed during the run (one per user at most)
    task_kills: int = 2
    drain_rounds: int = 60
    #: push monitoring: completion messages over STOMP and aso receiver among the components
    push: bool = False
    #: only the links XX -> YY and YY -> ZZ: a third of the files go XX -> YY -> ZZ as multihop jobs
    multihop: bool = False


@dataclass
class ChaosReport:
    files: int = 0
    passes: Counter = field(default_factory=Counter)
    sigkills: int = 0
    fts_restarts: int = 0
    state_restarts: int = 0
    killed_tasks: list[str] = field(default_factory=list)
    drain_rounds: int = 0
    states: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: files aso receiver handed over (from the receivers' logs, killed ones included)
    received: int = 0


class _Loop(threading.Thread):
    """One component run again and again, killed at random instants."""

    def __init__(self, inst: Installation, component: str, rng: random.Random, stop: threading.Event,
                 settings: ChaosSettings, report: ChaosReport, lock: threading.Lock):
        super().__init__(name=f"chaos-{component}", daemon=True)
        self.inst, self.component, self.rng, self.stop_event = inst, component, rng, stop
        self.settings, self.report, self.lock = settings, report, lock

    def run(self) -> None:
        long_running = self.component == "receiver"
        while not self.stop_event.is_set():
            # the receiver's log (one line per batch at DEBUG) says what it handed over, killed or not
            args = ("--log-level", "DEBUG", self.component) if long_running else (self.component,)
            log = open(self.inst.root / "receiver.log", "ab") if long_running else subprocess.DEVNULL  # noqa: SIM115
            proc = subprocess.Popen(aso_command("--config", str(self.inst.config_path), *args),
                                    cwd=self.inst.root, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
            if long_running:
                log.close()  # the child has its own copy
            lifetime = self.rng.uniform(1.0, 5.0) if long_running else self.rng.uniform(0.05, 1.5)
            # half as many SIGKILLs for the receiver: a stopped one reports what it handed over
            kill_chance = self.settings.kill_chance / 2 if long_running else self.settings.kill_chance
            killed = False
            try:
                proc.wait(lifetime)
            except subprocess.TimeoutExpired:
                if self.rng.random() < kill_chance:
                    os.killpg(proc.pid, signal.SIGKILL)
                    killed = True
                elif long_running:
                    os.killpg(proc.pid, signal.SIGTERM)  # the receiver runs until told to stop
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    killed = True
            with self.lock:
                self.report.passes[self.component] += 1
                self.report.sigkills += killed
            time.sleep(self.rng.uniform(0.0, 0.3))


def run_chaos(pki: TestPki, root: Path, settings: ChaosSettings) -> ChaosReport:
    """Everything from nothing under ``root``; the report lists every broken invariant."""
    rng = random.Random(settings.seed)
    report = ChaosReport()
    started = time.monotonic()
    (root / "fts").mkdir(parents=True)
    (root / "state").mkdir()
    state_service, state_url = start_state_server(root / "state")
    push: list[str] = []
    fts_push: list[str] = []
    subscription = f"aso-chaos-{os.getpid()}-{settings.seed}"
    if settings.push:
        from tests.brokers import rabbitmq, require

        broker = require(rabbitmq())
        # the service runs in its folder: its ./aso.toml holds the broker's credentials
        (root / "fts" / "aso.toml").write_text(
            f'[fts_server]\nstomp_user = "{broker.user}"\nstomp_password = "{broker.password}"\n')
        fts_push = ["--stomp-broker", broker.address]
        push = [f'receiver.brokers=["{broker.address}"]', f'receiver.user="{broker.user}"',
                f'receiver.password="{broker.password}"', f'receiver.subscription="{subscription}"',
                "receiver.batch_seconds=0.2", "receiver.early_seconds=20", "monitor.poll_after=3"]
    try:
        with fts_server_https(pki, root / "fts", "--workers", "6", "--per-link", "3",
                              "--poll-seconds", "0.3", "--checkpoint-seconds", "0.2", *fts_push) as fts:
            inst = Installation(
                root / "aso", fts.url, f'fts.ca_dir="{fts.ca_dir}"', "transfer.max_files_per_job=6",
                f"state.url={state_url}", 'state.token="service-token"',
                'aso.instance="test"',
                "state.retries=2", "state.backoff=0.2", "retry_manager.cooloff=1", "retry_manager.stuck_after=20",
                "publisher.max_files_per_block=7", "publisher.block_closure_timeout=1", *push,
            )
            if settings.multihop:
                inst.use_multihop("T2_YY_Dest", [("T2_XX_Source", "T2_YY_Dest"), ("T2_YY_Dest", "T2_ZZ_Dest")])
            users = []
            for i in range(settings.users):
                name = f"chaos{settings.seed % 1000}u{i}"
                inst.add_proxy(name, pki.add_user(name).proxy_path)
                users.append(name)
            requests = []
            for task in ("a", "b"):
                reqs = inst.make_requests(users, settings.files_per_user // 2, task_prefix=f"task{task}")
                for r in reqs:
                    r["publish"] = 1
                requests += reqs
            report.files = len(requests)
            service = open_backend(state_url, worker="chaos-driver", token="service-token", instance="test",
                                   retries=3, backoff=0.2)
            # with push monitoring, files are injected in three waves through the run, so that
            # completion messages keep coming while receivers are killed and restarted
            waves = [requests[i::3] for i in range(3)] if settings.push else [requests]
            service.inject(waves[0])
            tasks = sorted({r["taskname"]: r["username"] for r in requests}.items())
            service.upsert_tasks([{"tm_taskname": t, "tm_username": u, "tm_task_status": "COMPLETED",
                                   "tm_publish_name": DATASET.format(user=u)} for t, u in tasks])
            service.put_file_metadata([{"lfn": r["destination_lfn"], "taskname": r["taskname"],
                                        "metadata": {"outdataset": DATASET.format(user=r["username"]), "inevents": 1}}
                                       for r in requests])

            stop, lock = threading.Event(), threading.Lock()
            components = (*COMPONENTS, "receiver") if settings.push else COMPONENTS
            loops = [_Loop(inst, c, random.Random(rng.random()), stop, settings, report, lock) for c in components]
            for loop in loops:
                loop.start()
            events = _schedule(rng, settings, tasks)
            events = sorted(events + [(settings.seconds * n / len(waves), "inject", str(n)) for n in range(1, len(waves))])
            t0 = time.monotonic()
            for at, what, arg in events:
                time.sleep(max(0.0, at - (time.monotonic() - t0)))
                if what == "fts":
                    fts.service.kill9()
                    time.sleep(rng.uniform(0.5, 2.0))
                    fts.service.start()
                    report.fts_restarts += 1
                elif what == "state":
                    state_service.kill9()
                    time.sleep(rng.uniform(0.5, 2.0))
                    state_service.start()
                    report.state_restarts += 1
                elif what == "inject":
                    for _ in range(5):  # the state server may be down for a moment
                        try:
                            service.inject(waves[int(arg)])
                            break
                        except Exception:
                            time.sleep(1)
                elif what == "kill":
                    with contextlib.suppress(Exception):  # the state server may be down: try once more later
                        service.request_kill(task=arg)
                        report.killed_tasks.append(arg)
            time.sleep(max(0.0, settings.seconds - (time.monotonic() - t0)))
            stop.set()
            for loop in loops:
                loop.join(120)

            report.drain_rounds = _drain(inst, service, settings)
            if settings.push:
                report.received = _received(inst.root / "receiver.log")
            _check(inst, service, fts.db, requests, report, settings)
            service.close()
    finally:
        state_service.stop()
        if settings.push:
            _drop_subscription(subscription)
    report.seconds = time.monotonic() - started
    return report


def _schedule(rng: random.Random, settings: ChaosSettings, tasks: list[tuple[str, str]]) -> list[tuple[float, str, str]]:
    span = settings.seconds * 0.8
    events = [(rng.uniform(2, span), "fts", "") for _ in range(settings.fts_restarts)]
    events += [(rng.uniform(2, span), "state", "") for _ in range(settings.state_restarts)]
    # Kills early on, while chunks are being submitted and written ahead.
    chosen = rng.sample([t for t, _ in tasks], min(settings.task_kills, len(tasks)))
    events += [(rng.uniform(0.5, min(12.0, span / 2)), "kill", t) for t in chosen]
    return sorted(events)


TERMINAL = {"DONE", "FAILED", "KILLED"}
PUBLICATION_TERMINAL = {"DONE", "FAILED", "NOT_REQUIRED"}


def _received(log: Path) -> int:
    """Files the receivers handed over, from their per-batch DEBUG lines."""
    import re

    if not log.exists():
        return 0
    return sum(int(m.group(1)) for m in re.finditer(r"receiver: handed (\d+) file", log.read_text(errors="replace")))


def _drop_subscription(name: str) -> None:
    """End the run's durable subscription, or the broker keeps its queue (and every later
    message) for good."""
    from aso.messaging import fts3 as msg
    from aso.messaging.durable import subscription_headers
    from tests.brokers import Client, rabbitmq

    connect, sub = subscription_headers("rabbitmq", name)
    with Client(rabbitmq(), headers=connect) as client:
        client.subscribe(msg.destination(msg.COMPLETE_TOPIC), sub["id"], headers=sub)
        client.unsubscribe(sub["id"], headers=sub)


def _drain(inst: Installation, service, settings: ChaosSettings) -> int:
    for n in range(1, settings.drain_rounds + 1):
        if settings.push:
            inst.aso("receiver", "--seconds", "1", check=False)  # what the broker kept for it
        for component in COMPONENTS:
            inst.aso(component, check=False)
        rows = service.list_transfers(limit=100000)
        if all(r["tm_transfer_state"] in TERMINAL for r in rows) and all(
            r["tm_publication_state"] in PUBLICATION_TERMINAL for r in rows if r["tm_transfer_state"] == "DONE"
        ):
            return n
        time.sleep(0.3)
    return settings.drain_rounds + 1


def _check(inst: Installation, service, fts_db: Path, requests: list[dict], report: ChaosReport,
           settings: ChaosSettings) -> None:
    problems = report.problems
    rows = {r["tm_id"]: r for r in service.list_transfers(limit=100000)}
    report.states = Counter(r["tm_transfer_state"] for r in rows.values())
    if len(rows) != len(requests):
        problems.append(f"{len(requests)} files injected, {len(rows)} rows found")
    killed_tasks = set(report.killed_tasks)
    jobs = fts_jobs_by_row(fts_db)
    catalog = catalog_from_config(inst.config)
    try:
        in_catalog = Counter(f["lfn"] for d in catalog.listing() for b in d["blocks"] for f in b["files"])
    finally:
        catalog.close()
    for req in requests:
        row = next((r for r in rows.values() if r["tm_source_lfn"] == req["source_lfn"]), None)
        if row is None:
            problems.append(f"{req['source_lfn']}: lost")
            continue
        state, lfn = row["tm_transfer_state"], row["tm_destination_lfn"]
        dest = inst.local_path(req["destination"], lfn)
        n_jobs = len(jobs.get(row["tm_id"], []))
        if n_jobs > 1 + (row["tm_transfer_retry_count"] or 0):
            problems.append(f"{lfn}: in {n_jobs} FTS jobs with {row['tm_transfer_retry_count']} retries")
        if state not in TERMINAL:
            problems.append(f"{lfn}: stuck in {state}")
        elif state == "KILLED":
            if row["tm_taskname"] not in killed_tasks:
                problems.append(f"{lfn}: KILLED but its task was never killed")
            if dest.exists():
                problems.append(f"{lfn}: KILLED but its destination exists (the copy was not cancelled, or it finished)")
        elif state == "FAILED":
            problems.append(f"{lfn}: FAILED ({row['tm_transfer_failure_reason']})")
        elif state == "DONE":
            data = dest.read_bytes() if dest.exists() else None
            if data is None or f"{zlib.adler32(data):08x}" != req["checksum"]:
                problems.append(f"{lfn}: DONE but the destination is missing or differs")
            if row["tm_publication_state"] != "DONE":
                problems.append(f"{lfn}: publication {row['tm_publication_state']}")
            if settings.multihop and (req["source"], req["destination"]) == ("T2_XX_Source", "T2_ZZ_Dest"):
                if row["tm_path"] != "T2_XX_Source>T2_YY_Dest>T2_ZZ_Dest":
                    problems.append(f"{lfn}: DONE over path {row['tm_path']!r}, not XX>YY>ZZ")
                scratch = inst.config.topology().scratch_lfn("T2_YY_Dest", row["tm_id"], lfn)
                if inst.local_path("T2_YY_Dest", scratch).exists():
                    problems.append(f"{lfn}: its intermediate copy at T2_YY_Dest was left behind")
        expected = 1 if state == "DONE" else 0
        if in_catalog.get(lfn, 0) != expected:
            problems.append(f"{lfn}: in the catalog {in_catalog.get(lfn, 0)} time(s), expected {expected}")
    left = inst.sandbox_entries()
    if any(left.values()):
        problems.append(f"sandbox entries left after the drain: {left}")
