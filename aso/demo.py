"""``aso demo``: the whole product on one machine, from nothing, in about a minute.

It builds a throwaway grid (a CA, a host certificate for the embedded FTS service, one
certificate and RFC 3820 proxy per user), an embedded installation (``aso init`` layout: local
SQLite state store, sandboxes, three sites that are local folders), starts ``aso fts-server``
over HTTPS in this process, writes real files with their adler32 at the source sites, injects
them as a job's post-processing step would (half of the tasks ask for publication), then runs
the components in cron order until every file is terminal, and checks the outcome: every row
DONE, every destination byte-identical to its source, every file flagged for publication in
the catalog exactly once.

The components run through the same library calls and locks as the cron commands, in this
process, so the live view can follow them; the FTS service runs as its own process, as it
does in production (its log: ``fts-server.log`` beside the installation).

When a STOMP broker answers on localhost (``--broker``, default ``127.0.0.1:61613`` with
guest/guest, RabbitMQ's defaults), the FTS service publishes its completion messages there
and ``aso receiver`` runs beside the cron passes: files become DONE from the messages, and
the monitor only polls jobs quiet for ``[monitor] poll_after``. Without one the monitor polls
every job. The result says which path was used.
"""

from __future__ import annotations

import hashlib
import logging
import random
import shutil
import socket
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("aso.demo")

SITES = ("T2_XX_Source", "T2_YY_Dest", "T2_ZZ_Dest")
LINKS = ((SITES[0], SITES[1]), (SITES[0], SITES[2]), (SITES[1], SITES[2]))
#: the order an operator's crontab runs them in, every minute or so
CRON_ORDER = ("transfer", "monitor", "reporter", "publisher", "retry-manager")
TERMINAL_TRANSFER = frozenset({"DONE", "FAILED", "KILLED"})
TERMINAL_PUBLICATION = frozenset({"DONE", "FAILED", "NOT_REQUIRED"})


@dataclass
class DemoSettings:
    files: int = 200
    users: int = 3
    #: keep the installation here (created if missing, must be empty); None = a temporary folder, removed
    keep: Path | None = None
    min_size: int = 16 * 1024
    max_size: int = 512 * 1024
    #: give up after this many seconds
    timeout: float = 600.0
    seed: int = 20261122
    #: STOMP broker for push monitoring: "auto" (127.0.0.1:61613 if it answers), host:port,
    #: or None (poll only)
    broker: str | None = "auto"
    broker_user: str = "guest"
    broker_password: str = "guest"

#: where ``--broker auto`` looks (RabbitMQ's and ActiveMQ's default STOMP port)
DEFAULT_BROKER = "127.0.0.1:61613"


@dataclass
class Snapshot:
    """What the live view shows after each component pass."""

    elapsed: float
    transfer_states: dict[str, int]
    publication_states: dict[str, int]
    files: int
    component: str
    line: str

    @property
    def done(self) -> int:
        return self.transfer_states.get("DONE", 0)

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0


@dataclass
class DemoResult:
    directory: Path
    kept: bool
    files: int
    bytes: int
    publish_flagged: int
    seconds: float
    passes: dict[str, int]
    transfer_states: dict[str, int]
    publication_states: dict[str, int]
    catalog: list[dict[str, Any]]
    problems: list[str] = field(default_factory=list)
    #: how finished files were learnt: "messages over STOMP from <broker> (aso receiver)" or
    #: "polling (...)"
    completion_path: str = ""
    #: files the receiver handed to the reporter (the rest came from the monitor's polls)
    received: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def catalog_files(self) -> int:
        return sum(len(b["files"]) for d in self.catalog for b in d["blocks"])

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "directory": str(self.directory) if self.kept else None,
            "files": self.files,
            "bytes": self.bytes,
            "publish_flagged": self.publish_flagged,
            "seconds": round(self.seconds, 3),
            "files_per_second": round(self.files / self.seconds, 1) if self.seconds else None,
            "passes": self.passes,
            "transfer_states": self.transfer_states,
            "publication_states": self.publication_states,
            "catalog": [
                {"dataset": d["dataset"], "blocks": len(d["blocks"]), "files": sum(len(b["files"]) for b in d["blocks"])}
                for d in self.catalog
            ],
            "problems": self.problems,
            "completion_path": self.completion_path,
            "received": self.received,
        }


@dataclass
class _SourceFile:
    request: dict[str, Any]
    data_adler32: str
    size: int
    destination: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Grid:
    """A CA, a host certificate and per-user proxies in ``root``."""

    def __init__(self, root: Path, users: list[str]):
        from aso.x509.pki import make_ca, make_host_cert, make_proxy, make_user_cert

        self.ca_dir = root / "certificates"
        ca = make_ca(self.ca_dir, dn="/DC=org/DC=aso-demo/CN=ASO Demo CA", key_path=root / "ca-key.pem")
        host = make_host_cert(ca, "localhost")
        self.host_cert, self.host_key = host.write_cert_and_key(root / "hostcert.pem", root / "hostkey.pem")
        self.proxies: dict[str, bytes] = {}
        for user in users:
            cert = make_user_cert(ca, user)
            self.proxies[user] = make_proxy(cert, hours=12).proxy_pem()


def find_broker(settings: DemoSettings) -> tuple[str | None, str]:
    """The broker to use (None: poll only) and why, in words."""
    if settings.broker is None:
        return None, "polling (no broker asked for)"
    from aso.messaging.stomp_link import LinkError, StompLink, resolve

    spec = DEFAULT_BROKER if settings.broker == "auto" else settings.broker
    try:
        addresses = resolve([spec])
    except ValueError as exc:
        from aso.errors import ValidationError

        raise ValidationError("broker", str(exc)) from None
    for address in addresses:
        link = StompLink(address, settings.broker_user, settings.broker_password, timeout=3.0)
        try:
            link.connect()
        except LinkError as exc:
            reason = str(exc)
            continue
        finally:
            link.close()
        return spec, f"messages over STOMP from {spec} (aso receiver), the monitor as safety net"
    return None, f"polling (no STOMP broker answered at {spec}: {reason})"


def fts_url(port: int) -> str:
    return f"https://localhost:{port}"


class _FtsProcess:
    """``aso fts-server`` over HTTPS on a free loopback port, as its own process (as in
    production: the copies do not share an interpreter with the components), reading the
    demo's configuration (its roots are the sites' folders, its broker the receiver's)."""

    def __init__(self, config_path: Path, db: Path, grid: _Grid, port: int):
        import sys

        self.port = port
        self.url = fts_url(port)
        self.log = config_path.parent / "fts-server.log"
        self.args = [sys.executable, "-m", "aso.cli", "--config", str(config_path), "fts-server", "--host", "127.0.0.1",
                     "--port", str(port), "--db", str(db), "--cert", str(grid.host_cert), "--key", str(grid.host_key),
                     "--ca-dir", str(grid.ca_dir)]
        self.proc = None

    def start(self, timeout: float = 30.0) -> None:
        import subprocess

        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"aso fts-server did not start; its log: {self.log}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        import signal
        import subprocess

        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _make_files(config, users: list[str], settings: DemoSettings) -> tuple[list[_SourceFile], list[dict], list[dict]]:
    """Source files with real content, the requests a post-job injects for them, the tasks and
    the publication metadata a job uploads (for the tasks that publish)."""
    rng = random.Random(settings.seed)
    stamp = time.strftime("%y%m%d_%H%M%S", time.gmtime())
    files: list[_SourceFile] = []
    tasks: list[dict] = []
    metadata: list[dict] = []
    per_user = [settings.files // len(users) + (1 if i < settings.files % len(users) else 0) for i in range(len(users))]
    for user, count in zip(users, per_user, strict=True):
        for publish in (1, 0):
            kind = "publish" if publish else "nopublish"
            task = f"{stamp}:{user}_crab_demo_{kind}"
            dataset = f"/DemoPrimary/{user}-demo_{kind}-v1-{hashlib.sha1(task.encode()).hexdigest()[:8]}/USER"
            tasks.append({"tm_taskname": task, "tm_username": user, "tm_publish_name": dataset if publish else "",
                          "tm_task_status": "SUBMITTED"})
            share = count // 2 + (count % 2 if publish else 0)
            for i in range(share):
                src, dst = LINKS[i % len(LINKS)]
                tail = f"{user}/demo_{kind}/{i // 1000:04d}/output_{i}.root"
                data = rng.randbytes(rng.randint(settings.min_size, settings.max_size))
                src_lfn, dst_lfn = f"/store/temp/user/{tail}", f"/store/user/{tail}"
                source = _local(config, src, src_lfn)
                source.parent.mkdir(parents=True, exist_ok=True)
                source.write_bytes(data)
                checksum = f"{zlib.adler32(data):08x}"
                request = {
                    "username": user, "taskname": task, "source": src, "destination": dst,
                    "source_lfn": src_lfn, "destination_lfn": dst_lfn, "filesize": len(data),
                    "checksum": checksum, "publish": publish, "job_id": str(i + 1), "job_retry_count": 0,
                    "type": "output",
                }
                files.append(_SourceFile(request, checksum, len(data), _local(config, dst, dst_lfn)))
                if publish:
                    metadata.append({"lfn": dst_lfn, "taskname": task, "metadata": {
                        "outdataset": dataset, "inevents": 100, "runlumi": {"1": [i + 1]}, "swversion": "CMSSW_14_0_0",
                        "globaltag": "demo", "adler32": checksum}})
    return files, tasks, metadata


def _local(config, site: str, lfn: str) -> Path:
    prefix = config.site(site).prefix
    return Path(prefix[len("file://"):]) / lfn.lstrip("/")


def _states(backend) -> tuple[dict[str, int], dict[str, int]]:
    transfer: Counter = Counter()
    publication: Counter = Counter()
    for entry in backend.statistics():
        transfer[str(entry["transfer_state"])] += int(entry["count"])
        publication[str(entry["publication_state"])] += int(entry["count"])
    return dict(transfer), dict(publication)


def _complete_finished_tasks(backend, tasks: list[dict]) -> None:
    """What CRAB's task worker does once a task's jobs (and their post-jobs, which wait for
    the transfers) are over: the task becomes COMPLETED, which lets the publisher close its
    last, partial block."""
    open_tasks = [t for t in tasks if t["tm_task_status"] != "COMPLETED"]
    if not open_tasks:
        return
    busy = {e["taskname"] for e in backend.statistics() if e["transfer_state"] not in TERMINAL_TRANSFER}
    finished = [t for t in open_tasks if t["tm_taskname"] not in busy]
    for task in finished:
        task["tm_task_status"] = "COMPLETED"
    if finished:
        backend.upsert_tasks(finished)


def _component_passes(config, backend, catalog) -> dict[str, Callable[[], Any]]:
    from aso.components.build import build_pass

    return {name: build_pass(name, config, backend, catalog=catalog) for name in CRON_ORDER}


def run_demo(settings: DemoSettings, on_update: Callable[[Snapshot], None] | None = None) -> DemoResult:
    """Set up, run and check the demo; returns what happened (``result.ok`` says whether as
    expected). Everything started is stopped, the temporary folder removed unless kept."""
    if settings.files < 1 or settings.users < 1:
        from aso.errors import ValidationError

        raise ValidationError("files" if settings.files < 1 else "users", "must be at least 1")
    if settings.keep is not None:
        root = Path(settings.keep).resolve()
        if root.exists() and any(root.iterdir()):
            from aso.errors import ValidationError

            raise ValidationError("keep", f"{root} is not empty; give a new or empty folder")
        root.mkdir(parents=True, exist_ok=True)
    else:
        root = Path(tempfile.mkdtemp(prefix="aso-demo-"))
    # Every component logs its passes; here that goes to a file beside the installation.
    handler = logging.FileHandler(root / "demo.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"))
    top = logging.getLogger()
    previous_level = top.level
    top.addHandler(handler)
    top.setLevel(logging.INFO)
    result = None
    try:
        result = _run(root, settings, on_update)
        return result
    finally:
        top.removeHandler(handler)
        top.setLevel(previous_level)
        handler.close()
        if settings.keep is None:
            if result is not None and result.ok:
                shutil.rmtree(root, ignore_errors=True)
            elif result is not None:
                result.kept = True  # something went wrong: leave everything to look at


def _run(root: Path, settings: DemoSettings, on_update: Callable[[Snapshot], None] | None) -> DemoResult:
    from aso.catalogs import catalog_from_config
    from aso.components.runner import run_passes
    from aso.config import load_config
    from aso.credentials.base import write_private
    from aso.installation import init_installation
    from aso.state import backend_from_config

    users = [f"demo{i + 1}" for i in range(settings.users)]
    grid = _Grid(root / "grid", users)
    port = _free_port()
    broker, completion_path = find_broker(settings)
    overrides: dict[str, dict[str, Any]] = {"fts": {"ca_dir": str(grid.ca_dir)}, "monitor": {"threads": 4}}
    if broker is not None:
        # an instance of its own: messages of other installations on the same broker are not ours
        overrides["aso"] = {"instance": f"demo-{root.name}"[:60]}
        overrides["receiver"] = {"brokers": [broker], "user": settings.broker_user, "password": settings.broker_password}
        overrides["fts_server"] = {"db": "fts.db", "stomp_brokers": [broker], "stomp_user": settings.broker_user,
                                   "stomp_password": settings.broker_password}
    log.info("demo: finished files are learnt by %s", completion_path)
    config_path = init_installation(root, fts_endpoint=fts_url(port), overrides=overrides)
    config = load_config(str(config_path))
    fts = _FtsProcess(config_path, root / "fts.db", grid, port)
    for user, pem in grid.proxies.items():
        write_private(Path(config.credentials.directory) / f"{user}.pem", pem)

    files, tasks, metadata = _make_files(config, users, settings)
    backend = backend_from_config(config)
    catalog = catalog_from_config(config)
    passes: Counter = Counter()
    fts.start()
    receiver = _ReceiverThread(config) if broker is not None else None
    started = time.monotonic()
    try:
        backend.inject([f.request for f in files])
        backend.upsert_tasks(tasks)
        backend.put_file_metadata(metadata)
        log.info("demo: %d files for %d users injected in %s", len(files), len(users), root)
        components = _component_passes(config, backend, catalog)
        while True:
            for name in CRON_ORDER:
                outcome = run_passes(config.aso.lock_dir, name, components[name])
                passes[name] += 1
                summary = outcome.summary
                if on_update:
                    transfer, publication = _states(backend)
                    line = summary.line() if hasattr(summary, "line") else ""
                    on_update(Snapshot(time.monotonic() - started, transfer, publication, len(files), name, line))
            _complete_finished_tasks(backend, tasks)
            transfer, publication = _states(backend)
            if set(transfer) <= TERMINAL_TRANSFER and set(publication) <= TERMINAL_PUBLICATION:
                break
            if time.monotonic() - started > settings.timeout:
                break
            time.sleep(0.2)
        seconds = time.monotonic() - started
        rows = backend.list_transfers(limit=len(files) + 1000)
    finally:
        received = receiver.stop() if receiver is not None else 0
        fts.stop()
        backend.close()
    try:
        listing = catalog.listing() if hasattr(catalog, "listing") else []
    finally:
        catalog.close()
    problems = _check(files, rows, listing, settings, seconds)
    transfer, publication = Counter(), Counter()
    for row in rows:
        transfer[row["tm_transfer_state"]] += 1
        publication[row["tm_publication_state"]] += 1
    return DemoResult(root, settings.keep is not None, len(files), sum(f.size for f in files),
                      sum(1 for f in files if f.request["publish"]), seconds, dict(passes), dict(transfer),
                      dict(publication), listing, problems, completion_path, received)


class _ReceiverThread:
    """``aso receiver`` in a thread of the demo, under its lock, as the command runs it."""

    def __init__(self, config):
        from aso.components.pipeline import PipelineSettings
        from aso.components.receiver import Receiver, ReceiverSettings
        from aso.locking import component_lock

        self.receiver = Receiver(ReceiverSettings.from_config(config), PipelineSettings.from_config(config))
        self._stop = threading.Event()
        self._lock = component_lock(config.aso.lock_dir, "receiver")
        self._lock.__enter__()
        self._thread = threading.Thread(target=self.receiver.run, args=(self._stop,), name="demo-receiver", daemon=True)
        self._thread.start()

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=30)
        self._lock.__exit__(None, None, None)
        return sum(self.receiver.summary.handed_over.values())


def _check(files: list[_SourceFile], rows: list[dict], listing: list[dict], settings: DemoSettings,
           seconds: float) -> list[str]:
    problems: list[str] = []
    if seconds > settings.timeout:
        problems.append(f"not finished after {settings.timeout:.0f} s")
    by_lfn = {r["tm_destination_lfn"]: r for r in rows}
    in_catalog = Counter(f["lfn"] for d in listing for b in d["blocks"] for f in b["files"])
    for f in files:
        lfn = f.request["destination_lfn"]
        row = by_lfn.get(lfn)
        if row is None:
            problems.append(f"{lfn}: no row in the state store")
            continue
        if row["tm_transfer_state"] != "DONE":
            problems.append(f"{lfn}: {row['tm_transfer_state']} ({row['tm_transfer_failure_reason']})")
            continue
        try:
            data = f.destination.read_bytes()
        except OSError as exc:
            problems.append(f"{lfn}: destination unreadable: {exc.strerror or exc}")
            continue
        if len(data) != f.size or f"{zlib.adler32(data):08x}" != f.data_adler32:
            problems.append(f"{lfn}: destination differs from the source")
        wanted = 1 if f.request["publish"] else 0
        if in_catalog.get(lfn, 0) != wanted:
            problems.append(f"{lfn}: in the catalog {in_catalog.get(lfn, 0)} time(s), expected {wanted}")
        expected_pub = "DONE" if wanted else "NOT_REQUIRED"
        if row["tm_publication_state"] != expected_pub:
            problems.append(f"{lfn}: publication {row['tm_publication_state']}, expected {expected_pub}"
                            f" ({row.get('tm_publication_failure_reason') or ''})")
    return problems
