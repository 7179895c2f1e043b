"""Push monitoring: how soon a file FTS finished is DONE, with ``aso receiver`` and without,
and how many completion messages per second the receiver turns into hand-offs.

    python benchmarks/receiver.py                              # both parts, defaults below
    python benchmarks/receiver.py --files 10000 --spread 10 --poll-interval 60
    python benchmarks/receiver.py --throughput-messages 50000 --skip-latency

Latency (one run, two paths side by side, local SQLite backend, ``aso fts-server --simulate``
publishing FTS3's messages to RabbitMQ's STOMP on 127.0.0.1:61613):
    ``--files`` files of ``--users`` users are injected; ``aso transfer --loop --interval 0.1``
    submits them in ``--spread`` passes (acquire_limit is set so), so they finish at FTS over
    the passes' duration (about a second each for 1,000 files; the table shows the spread). ``aso reporter --loop --interval 0.1`` runs throughout. The
    receiver path runs ``aso receiver`` (and the monitor as safety net, ``poll_after`` 300 s);
    the poll path runs ``aso monitor --loop --interval <poll-interval>`` instead (cron every
    minute is the usual; ``crontab.example`` says every two). A file's latency is from its
    ``finish_time`` in the FTS database to the moment its row is seen DONE in the state
    database (read every 50 ms).

Throughput: ``--throughput-messages`` completion messages (for ``--throughput-users`` users,
50 files per job) are published into a durable subscription while the receiver is away, then
``aso receiver`` is started and timed until every monitor entry is handed over (its sandbox
empty). Peak memory is the receiver process's VmHWM.

Targets (issue 13): p50 <= 1 s and p99 <= 3 s for 10,000 files over 10 s; >= 5,000 messages/s;
<= 150 MB.
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)  # benchmarks/copy.py would shadow the standard library's copy

import argparse
import json
import shutil
import signal
import sqlite3
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.pipeline import _WITH_HWM, make_requests  # noqa: E402
from tests.procs import Service, aso_command, free_port  # noqa: E402

console = Console(stderr=True)
BROKER = "127.0.0.1:61613"
DONE = 3


def _proxies(work: Path, users: int) -> None:
    from aso.x509.pki import make_ca, make_proxy, make_user_cert

    ca = make_ca(work / "ca", key_path=work / "ca-key.pem")
    proxy = make_proxy(make_user_cert(ca, "bench"), hours=72)
    proxies = work / "aso" / "proxies"
    proxy.write_proxy(proxies / "template.pem")
    for u in range(users):
        shutil.copyfile(proxies / "template.pem", proxies / f"user{u:04d}.pem")


def _background(config: Path, *args: str, log: Path, hwm: Path | None = None) -> subprocess.Popen:
    command = [sys.executable, "-c", _WITH_HWM, "--config", str(config), *args] if hwm else \
        aso_command("--config", str(config), *args)
    env = {**os.environ, **({"ASO_BENCH_HWM": str(hwm)} if hwm else {})}
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=open(log, "ab"), cwd=config.parent,  # noqa: SIM115
                            env=env, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_log(log: Path, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not log.exists() or text not in log.read_text():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {text!r} in {log}")
        time.sleep(0.05)


def latency_run(work: Path, files: int, users: int, spread: int, path: str, poll_interval: float) -> dict:
    """One run of the pipeline; per-file latency from FTS's finish to the row seen DONE."""
    work.mkdir(parents=True)
    fts_port = free_port()
    fts = Service(aso_command("--log-level", "WARNING", "fts-server", "--port", str(fts_port), "--db", str(work / "fts.db"),
                              "--simulate", "--poll-seconds", "0.05", "--root", str(work), "--stomp-broker", BROKER),
                  fts_port, work / "fts.log", cwd=str(work))
    (work / "aso.toml").write_text('[fts_server]\nstomp_user = "guest"\nstomp_password = "guest"\n')
    fts.start()
    procs: list[subprocess.Popen] = []
    per_pass = max(1, files // users // spread)
    settings = ["--set", f"transfer.acquire_limit={per_pass}", "--set", "retry_manager.stuck_after=36000",
                "--set", f'aso.instance="bench{os.getpid()}{path}"']
    if path == "receiver":
        settings += ["--set", f'receiver.brokers=["{BROKER}"]', "--set", 'receiver.user="guest"',
                     "--set", 'receiver.password="guest"', "--set", "receiver.batch_seconds=0.1"]
    try:
        subprocess.run(aso_command("init", str(work / "aso"), "--fts", f"http://127.0.0.1:{fts_port}", *settings),
                       check=True, capture_output=True)
        config = work / "aso" / "aso.toml"
        _proxies(work, users)
        inject = work / "inject.json"
        inject.write_text(json.dumps(make_requests(files, users)))
        subprocess.run(aso_command("--config", str(config), "inject", str(inject)), check=True, capture_output=True)
        log = work / "components.log"
        if path == "receiver":
            procs.append(_background(config, "receiver", log=log))
            _wait_log(log, "subscribed to")
        procs.append(_background(config, "reporter", "--loop", "--interval", "0.1", log=log))
        procs.append(_background(config, "monitor", "--loop", "--interval", str(poll_interval), log=log))
        started = time.time()
        procs.append(_background(config, "transfer", "--loop", "--interval", "0.1", log=log))
        seen: dict[str, float] = {}
        state_db = sqlite3.connect(work / "aso" / "state.db", timeout=30)
        deadline = time.monotonic() + 120 + 3 * poll_interval + 2 * spread
        while len(seen) < files and time.monotonic() < deadline:
            now = time.time()
            for (row,) in state_db.execute("SELECT tm_id FROM filetransfersdb WHERE tm_transfer_state = ?", (DONE,)):
                seen.setdefault(row, now)
            time.sleep(0.05)
        total = time.time() - started
        state_db.close()
    finally:
        for proc in reversed(procs):
            _stop(proc)
        fts.stop()
    finished = {}
    with sqlite3.connect(work / "fts.db") as conn:
        for metadata, finish in conn.execute("SELECT file_metadata, finish_time FROM t_file"):
            finished[json.loads(metadata)["oracleId"]] = finish
    lat = sorted(max(0.0, seen[r] - finished[r]) for r in seen if r in finished)
    spread_s = (max(finished.values()) - min(finished.values())) if finished else 0.0

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")

    return {"path": path, "files": files, "done": len(seen), "fts_finish_spread_s": round(spread_s, 1),
            "p50_s": round(pct(0.50), 2), "p99_s": round(pct(0.99), 2), "max_s": round(lat[-1], 2) if lat else None,
            "mean_s": round(statistics.fmean(lat), 2) if lat else None, "all_done_after_s": round(total, 1),
            "poll_interval_s": poll_interval if path == "poll" else None}


def throughput_run(work: Path, messages: int, users: int) -> dict:
    """Messages/s from a durable subscription full of messages into sandbox hand-offs."""
    import stomp

    from aso.components.handoffs import MonitorEntry
    from aso.messaging import fts3 as msg
    from aso.sandbox import Sandbox
    from aso.transfertools.base import Transfer
    from tests.brokers import Broker, Client, rabbitmq

    work.mkdir(parents=True)
    name = f"aso-bench-{os.getpid()}"
    instance = f"tput{os.getpid()}"
    subprocess.run(aso_command("init", str(work / "aso"), "--fts", "http://127.0.0.1:1",
                               "--set", f'aso.instance="{instance}"', "--set", f'receiver.brokers=["{BROKER}"]',
                               "--set", 'receiver.user="guest"', "--set", 'receiver.password="guest"',
                               "--set", f'receiver.subscription="{name}"', "--set", "receiver.batch_size=5000",
                               "--set", "receiver.batch_seconds=0.2"), check=True, capture_output=True)
    config = work / "aso" / "aso.toml"
    box = Sandbox(work / "aso" / "sandboxes", "monitor")
    bodies = []
    per_job = 50
    for j in range(messages // per_job):
        user = f"user{j % users:04d}"
        job = f"{j:08d}-0000-5000-8000-000000000000"
        rows = [f"r{j}-{i}" for i in range(per_job)]
        box.write_record(user, job, MonitorEntry.new(job, user, "http://127.0.0.1:1", int(time.time()),
                                                     [Transfer(r, f"file:///s/{r}", f"file:///d/{r}") for r in rows]),
                         durable=False)
        for i, r in enumerate(rows):
            outcome = msg.FileOutcome(
                file_id=j * per_job + i, job_id=job, job_type="N", source=f"file:///s/{r}", destination=f"file:///d/{r}",
                source_se="file://", dest_se="file://", vo_name="cms", user_dn="/CN=bench", activity="default",
                outcome="FINISHED", reason=None, recoverable=False, retry=0, retry_max=3, start_time=time.time(),
                finish_time=time.time(), filesize=1000, user_filesize=1000, checksum="ADLER32",
                file_metadata={"oracleId": r}, job_metadata={"issuer": "ASO", "instance": instance, "user": user},
                submit_time=time.time(), job_state="ACTIVE", file_state="FINISHED")
            bodies.append(msg.encode(msg.completion_body(outcome, "http://127.0.0.1:1")))
    log = work / "receiver.log"
    hwm = work / "receiver.hwm"
    # create the durable subscription, then leave: the broker keeps what is published meanwhile
    first = _background(config, "receiver", log=log)
    _wait_log(log, "subscribed to")
    _stop(first)
    broker: Broker = rabbitmq()
    conn = stomp.Connection12([(broker.host, broker.port)], vhost="/")
    published = threading.Event()
    conn.set_listener("r", type("L", (), {"on_receipt": lambda self, f: published.set()})())
    conn.connect(broker.user, broker.password, wait=True)
    start = time.perf_counter()
    dest = msg.destination(msg.COMPLETE_TOPIC)
    for i, body in enumerate(bodies):
        conn.send(dest, body, headers={"persistent": "true", **({"receipt": "last"} if i == len(bodies) - 1 else {})})
    published.wait(120)
    publish_s = time.perf_counter() - start
    conn.disconnect()
    start = time.perf_counter()
    proc = _background(config, "receiver", log=log, hwm=hwm)
    deadline = time.monotonic() + 600
    while any(box.dir.rglob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    _stop(proc)
    peak_mb = int(hwm.read_text()) / 1024 if hwm.exists() else float("nan")
    left = sum(1 for _ in box.dir.rglob("*.json"))
    connect, sub = __import__("aso.messaging.durable", fromlist=["x"]).subscription_headers("rabbitmq", name)
    with Client(broker, headers=connect) as client:
        client.subscribe(dest, sub["id"], headers=sub)
        client.unsubscribe(sub["id"], headers=sub)
    reporter_files = sum(len(json.loads(p.read_text())["files"]) for p in (work / "aso" / "sandboxes" / "reporter").rglob("*.json"))
    return {"messages": messages, "users": users, "publish_s": round(publish_s, 2), "receiver_s": round(seconds, 2),
            "messages_per_s": round(messages / seconds), "peak_mb": round(peak_mb, 1), "jobs_left": left,
            "handed_over": reporter_files, "note": "includes the receiver's start-up (about 0.5 s)"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--spread", type=int, default=10, help="transfer passes the files are submitted in")
    ap.add_argument("--poll-interval", type=float, default=60.0, help="aso monitor --loop interval on the poll path")
    ap.add_argument("--throughput-messages", type=int, default=50000)
    ap.add_argument("--throughput-users", type=int, default=100)
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="aso-receiver-bench-"))
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    result: dict = {}
    if not args.skip_latency:
        result["latency"] = []
        for path in ("receiver", "poll"):
            console.print(f"latency, {path} path: {args.files} files over ~{args.spread} s …")
            result["latency"].append(latency_run(work / path, args.files, args.users, args.spread, path, args.poll_interval))
    if not args.skip_throughput:
        console.print(f"throughput: {args.throughput_messages} messages …")
        result["throughput"] = throughput_run(work / "throughput", args.throughput_messages, args.throughput_users)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    out = Console(width=160)
    if "latency" in result:
        table = Table(title=f"FTS finish -> row DONE: {args.files} files of {args.users} users submitted over "
                            f"{args.spread} passes (aso fts-server --simulate, local SQLite, RabbitMQ STOMP)")
        cols = ("path", "done", "fts_finish_spread_s", "p50_s", "p99_s", "max_s", "mean_s", "all_done_after_s")
        for c in cols:
            table.add_column(c, justify="left" if c == "path" else "right")
        for r in result["latency"]:
            label = "aso receiver (+ monitor as safety net)" if r["path"] == "receiver" else \
                f"poll only (aso monitor every {r['poll_interval_s']:g} s)"
            table.add_row(label, *(str(r[c]) for c in cols[1:]))
        out.print(table)
    if "throughput" in result:
        t = result["throughput"]
        table = Table(title="aso receiver throughput: durable subscription full of completion messages -> hand-offs")
        for c in ("messages", "users", "receiver_s", "messages_per_s", "peak_mb", "handed_over", "jobs_left"):
            table.add_column(c, justify="right")
        table.add_row(*(str(t[c]) for c in ("messages", "users", "receiver_s", "messages_per_s", "peak_mb",
                                             "handed_over", "jobs_left")))
        out.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
