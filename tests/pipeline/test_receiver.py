"""Push monitoring end to end: a real ``aso fts-server`` publishing FTS3's completion messages
to a real broker (RabbitMQ's STOMP plug-in, ActiveMQ), ``aso receiver`` as a process, and
``aso transfer`` / ``aso reporter`` passes with no monitor pass, unless the test is about
the monitor as the safety net. A TCP forwarder in front of the broker plays "the broker goes
away" without stopping the machine's broker."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from aso.messaging import fts3 as msg
from aso.messaging.durable import subscription_headers
from tests.brokers import Broker, Client, activemq, rabbitmq, require
from tests.messaging.tcp_proxy import TcpProxy
from tests.pipeline.conftest import installation, users_for
from tests.pipeline.harness import all_in
from tests.pki import fts_server_https
from tests.procs import aso_command

_ids = itertools.count()
TOPIC = msg.destination(msg.COMPLETE_TOPIC)


class ReceiverProcess:
    """``aso receiver`` as cron's supervisor would run it; stopped with SIGTERM."""

    def __init__(self, inst):
        self.inst = inst
        self.log = inst.root / f"receiver-{next(_ids)}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> ReceiverProcess:
        self._out = open(self.log, "ab")  # noqa: SIM115 - lives as long as the child
        self.proc = subprocess.Popen(aso_command("--config", str(self.inst.config_path), "receiver", "--json"),
                                     stdout=subprocess.PIPE, stderr=self._out, cwd=self.inst.root, start_new_session=True)
        self.wait_for("subscribed to")
        return self

    def wait_for(self, text: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"receiver: no {text!r} in its log:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)

    def stop(self) -> dict:
        os.killpg(self.proc.pid, signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        self._out.close()
        assert self.proc.returncode == 0, self.log.read_text()[-3000:]
        return json.loads(out)

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._out.close()


def _install(tmp_path, fts, broker: Broker, *extra: str):
    instance = f"recv{os.getpid()}x{next(_ids)}"  # messages of other tests are not this installation's
    return installation(
        tmp_path, fts, f'aso.instance="{instance}"', f'receiver.brokers=["{broker.address}"]',
        f'receiver.user="{broker.user}"', f'receiver.password="{broker.password}"', "receiver.batch_seconds=0.1",
        "receiver.early_seconds=30", *extra,
    )


def _outbox(fts) -> int:
    with sqlite3.connect(fts.db) as conn:
        return conn.execute("SELECT COUNT(*) FROM t_outbox").fetchone()[0]


def _wait(predicate, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout} s")
        time.sleep(0.1)


def _fts(pki, folder: Path, broker_address: str, broker: Broker | None = None):
    folder.mkdir(parents=True, exist_ok=True)
    broker = broker or rabbitmq()
    # the service runs in this folder: its ./aso.toml holds the broker's credentials
    (folder / "aso.toml").write_text(f'[fts_server]\nstomp_user = "{broker.user}"\nstomp_password = "{broker.password}"\n')
    return fts_server_https(pki, folder, "--workers", "8", "--per-link", "4", "--stomp-broker", broker_address,
                            roots=[folder.parent])


@pytest.mark.parametrize("kind", ["rabbitmq", "activemq"])
def test_receiver_alone_finishes_every_file_and_shrugs_off_duplicates_and_junk(tmp_path, pki, kind):
    broker = require(rabbitmq() if kind == "rabbitmq" else activemq())
    with _fts(pki, tmp_path / "fts", broker.address, broker) as fts, Client(broker) as spy:
        spy.subscribe(TOPIC, "spy", ack="auto")
        inst = _install(tmp_path, fts, broker)
        users = users_for(pki, inst, 2)
        receiver = ReceiverProcess(inst).start()
        try:
            second = inst.aso("receiver", "--seconds", "30", timeout=20)  # one at a time: exits at once
            assert second.returncode == 0 and "another 'receiver' pass holds" in second.stderr
            inst.inject(inst.make_requests(users, 30, size=500))
            inst.round("transfer")
            seen = spy.receive(1)[0][1]
            spy.send(TOPIC, seen)  # the same message a second time
            spy.send(TOPIC, "{ this is not FTS3 ")
            spy.send(TOPIC, msg.encode({**json.loads(seen), "job_metadata": {"issuer": "rucio"}}))  # Rucio's
            inst.run_until(all_in("DONE"), rounds=60, components=("transfer", "reporter"), pause=0.3)
        finally:
            summary = receiver.stop()
    assert len(inst.rows()) == 60 and inst.sandbox_entries() == {"monitor": 0, "reporter": 0, "submit": 0, "stage": 0}
    assert summary["handed_over"] == {"FINISHED": 60}
    assert summary["malformed"] >= 1 and summary["foreign"] >= 1 and summary["duplicates"] >= 1
    log = receiver.log.read_text()
    assert "message(s)/s" in log and "lag p50" in log


def test_broker_down_then_back_delivers_the_kept_messages_and_the_monitor_finishes_the_rest(tmp_path, pki):
    broker = require(rabbitmq())
    # forwarders between each side and the broker: down() takes "the broker" away from that side
    to_fts, to_receiver = TcpProxy(broker.host, broker.port), TcpProxy(broker.host, broker.port)
    to_receiver.up()
    try:
        with _fts(pki, tmp_path / "fts", to_fts.address) as fts:
            via = Broker("rabbitmq", "127.0.0.1", to_receiver.port)
            inst = _install(tmp_path, fts, via, "monitor.poll_after=2")
            users = users_for(pki, inst, 2)
            receiver = ReceiverProcess(inst).start()
            try:
                inst.inject(inst.make_requests(users, 20, size=500, task_prefix="first"))
                inst.round("transfer")
                _wait(lambda: _outbox(fts) >= 40, "completion messages kept while the broker is away")
                inst.round("reporter")
                assert {r["tm_transfer_state"] for r in inst.rows()} == {"SUBMITTED"}
                assert "next try in" in fts.log.read_text()  # the copies went on; the sender backs off

                # the receiver loses its broker too, and reconnects when it is back
                to_receiver.down()
                _wait(lambda: "next try in" in receiver.log.read_text(), "the receiver retrying")
                to_receiver.up()
                _wait(lambda: receiver.log.read_text().count("subscribed to") == 2, "the receiver subscribed again")

                to_fts.up()
                inst.run_until(all_in("DONE"), rounds=60, components=("transfer", "reporter"), pause=0.3)
                _wait(lambda: _outbox(fts) == 0, "the outbox emptied")
            finally:
                summary = receiver.stop()
            assert summary["handed_over"] == {"FINISHED": 40}

            # messages sent while no receiver listens are gone (a plain subscription): the
            # monitor's poll of jobs quiet for poll_after finds those files
            inst.inject(inst.make_requests(users, 10, size=500, task_prefix="second"))
            inst.round("transfer")
            _wait(lambda: _outbox(fts) == 0, "the second batch of messages sent")
            out = json.loads(inst.aso("monitor", "--json").stdout)
            assert out["jobs"] == 0 and out["quiet_skipped"] > 0  # too recent: left to the receiver
            time.sleep(2.2)
            inst.run_until(all_in("DONE"), rounds=20, components=("monitor", "reporter"), pause=0.3)
    finally:
        to_fts.close()
        to_receiver.close()
    assert len(inst.rows()) == 60 and inst.sandbox_entries() == {"monitor": 0, "reporter": 0, "submit": 0, "stage": 0}


def test_a_receiver_killed_mid_batch_loses_nothing(tmp_path, pki):
    broker = require(rabbitmq())
    name = f"aso-test-{os.getpid()}-{next(_ids)}"
    rnd = random.Random(1)
    with _fts(pki, tmp_path / "fts", broker.address) as fts:
        # a durable subscription keeps unacknowledged messages; a long batch keeps them unacknowledged
        inst = _install(tmp_path, fts, broker, f'receiver.subscription="{name}"', "receiver.batch_seconds=1.5",
                        "receiver.batch_size=100000")
        users = users_for(pki, inst, 3)
        try:
            receiver = ReceiverProcess(inst).start()
            inst.inject(inst.make_requests(users, 30, size=500))
            inst.round("transfer")
            for _ in range(3):
                time.sleep(rnd.uniform(0.2, 1.4))
                receiver.kill9()
                receiver = ReceiverProcess(inst).start()
                inst.round("transfer", "reporter")
            inst.run_until(all_in("DONE"), rounds=60, components=("transfer", "reporter"), pause=0.3)
            receiver.stop()
        finally:
            _drop_durable(broker, name)
    assert len(inst.rows()) == 90 and inst.sandbox_entries() == {"monitor": 0, "reporter": 0, "submit": 0, "stage": 0}


def _drop_durable(broker: Broker, name: str) -> None:
    """End the test's durable subscription, or the broker keeps its queue (and every later
    message) for good."""
    connect, sub = subscription_headers("rabbitmq", name)
    with Client(broker, headers=connect) as client:
        client.subscribe(TOPIC, sub["id"], headers=sub)
        client.unsubscribe(sub["id"], headers=sub)  # with the durable headers: deletes the queue


def test_receiver_configuration_errors_are_one_line_and_exit_2(tmp_path):
    from tests.pipeline.harness import Installation

    bare = Installation(tmp_path / "bare", "http://127.0.0.1:1")
    res = bare.aso("receiver", check=False)
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        "error: receiver.brokers is empty: configure the STOMP brokers FTS publishes to"]
    bad = Installation(tmp_path / "bad", "http://127.0.0.1:1", 'receiver.brokers=["host:99999"]')
    res = bad.aso("receiver", check=False)
    assert res.returncode == 2 and "receiver.brokers" in res.stderr and "Traceback" not in res.stderr
    sub = Installation(tmp_path / "sub", "http://127.0.0.1:1", 'receiver.brokers=["127.0.0.1:61613"]',
                       'receiver.subscription="../x y"')
    res = sub.aso("receiver", check=False)
    assert res.returncode == 2 and "receiver.subscription" in res.stderr
