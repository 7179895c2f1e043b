"""``aso fts-server``'s monitoring messages against a real broker (RabbitMQ's STOMP): what is
sent for a job, and the outbox across a broker away, a SIGKILL and restarts (every message
once, none twice)."""

from __future__ import annotations

import json
import sqlite3
import time

from aso.messaging import fts3 as msg
from tests.brokers import Client, rabbitmq, require
from tests.ftsd.fts import PlainFts, transfer
from tests.messaging.tcp_proxy import TcpProxy

COMPLETE, STATE = msg.destination(msg.COMPLETE_TOPIC), msg.destination(msg.STATE_TOPIC)


def _service(folder, broker_address: str) -> PlainFts:
    folder.mkdir(parents=True, exist_ok=True)
    broker = rabbitmq()
    (folder / "aso.toml").write_text(f'[fts_server]\nstomp_user = "{broker.user}"\nstomp_password = "{broker.password}"\n'
                                     'vo = "cms"\nalias = "https://fts.example.org:8446"\n')
    return PlainFts(folder, "--stomp-broker", broker_address)


def _listen(spy: Client) -> None:
    """Subscribe to both topics and wait until the broker confirmed (else early messages miss)."""
    for dest, sub in ((COMPLETE, "c"), (STATE, "s")):
        spy.subscribe(dest, sub, ack="auto", headers={"receipt": f"sub-{sub}"})
        spy.wait_receipt(f"sub-{sub}")


def _outbox(fts: PlainFts) -> int:
    with sqlite3.connect(fts.db) as conn:
        return conn.execute("SELECT COUNT(*) FROM t_outbox").fetchone()[0]


def _ours(client: Client, job_ids: set[str], seconds: float) -> list[tuple[str, dict]]:
    """(destination, body) of the messages of these jobs arriving within ``seconds``."""
    got, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        for headers, body in client.nothing_within(0.1):
            doc = json.loads(body)
            if doc.get("job_id") in job_ids:
                got.append((headers["destination"], doc))
    return got


def test_a_job_sends_state_and_completion_messages_in_fts3s_shape(tmp_path):
    broker = require(rabbitmq())
    (tmp_path / "a").write_bytes(b"data")
    fts = _service(tmp_path / "fts", broker.address).start()
    try:
        with Client(broker) as spy:
            _listen(spy)
            job = fts.submit([transfer((tmp_path / "a").as_uri(), (tmp_path / "b").as_uri(), metadata={"oracleId": "r1"}),
                              transfer((tmp_path / "missing").as_uri(), (tmp_path / "c").as_uri(), metadata={"oracleId": "r2"})],
                             retry=-1, job_metadata={"issuer": "ASO", "instance": "prod", "user": "alice"})
            fts.wait(job)
            got = _ours(spy, {job}, 3)
    finally:
        fts.stop()
    states = [(d["file_state"], d["file_id"]) for dest, d in got if dest == STATE]
    assert sorted(s for s, _ in states) == ["ACTIVE", "ACTIVE", "FAILED", "FINISHED", "SUBMITTED", "SUBMITTED"]
    done = {d["file_metadata"]["oracleId"]: d for dest, d in got if dest == COMPLETE}
    assert set(done) == {"r1", "r2"}
    ok, failed = done["r1"], done["r2"]
    assert ok["t_final_transfer_state"] == "Ok" and ok["vo"] == "cms" and ok["endpnt"] == "https://fts.example.org:8446"
    assert ok["job_metadata"] == {"issuer": "ASO", "instance": "prod", "user": "alice", "auth_method": "unauthenticated"}
    assert ok["tr_id"].endswith(f"__{ok['file_id']}__{job}") and ok["f_size"] == 4 and ok["job_state"] == "UNKNOWN"
    assert failed["t_final_transfer_state"] == "Error" and failed["tr_error_scope"] == "SOURCE"
    assert failed["t_error_code"] == 2 and failed["tr_error_category"] == "NO_SUCH_FILE_OR_DIRECTORY"
    c = msg.Completion.from_message(msg.encode(failed))
    assert c.is_final() and c.reason.startswith("SOURCE [2] ") and c.row_id == "r2"


def test_the_outbox_keeps_messages_through_a_broker_away_and_a_kill_and_sends_each_once(tmp_path):
    broker = require(rabbitmq())
    proxy = TcpProxy(broker.host, broker.port)  # down: the service cannot reach the broker
    for name in ("a", "b", "c"):
        (tmp_path / name).write_bytes(name.encode())
    fts = _service(tmp_path / "fts", proxy.address).start()
    try:
        with Client(broker) as spy:
            _listen(spy)
            job = fts.submit([transfer((tmp_path / n).as_uri(), (tmp_path / f"{n}.out").as_uri()) for n in ("a", "b", "c")])
            assert fts.wait(job)["job_state"] == "FINISHED"  # the copies did not wait for the broker
            waiting = _outbox(fts)
            assert waiting == 3 * 3 + 3  # per file: SUBMITTED, ACTIVE, FINISHED states and a completion
            fts.kill9()
            proxy.up()
            fts.start()
            got = _ours(spy, {job}, 4)
            assert len(got) == waiting and _outbox(fts) == 0
            assert sum(1 for dest, _ in got if dest == COMPLETE) == 3
            fts.stop()
            fts.start()  # a restart sends nothing again
            assert _ours(spy, {job}, 2) == []
    finally:
        fts.stop()
        proxy.close()


def test_state_messages_carry_the_staging_of_a_bring_online_job(tmp_path):
    broker = require(rabbitmq())
    tape = tmp_path / "tape"
    tape.mkdir()
    (tape / "t").write_bytes(b"on tape")
    fts = _service(tmp_path / "fts", broker.address)
    fts.args += ["--tape-root", str(tape), "--staging-delay", "0.3", "0.3"]
    fts.start()
    try:
        with Client(broker) as spy:
            _listen(spy)
            job = fts.submit([transfer((tape / "t").as_uri(), (tmp_path / "copy").as_uri())], bring_online=30)
            assert fts.wait(job)["job_state"] == "FINISHED"
            got = _ours(spy, {job}, 3.0)
    finally:
        fts.stop()
    states = [doc for dest, doc in got if dest == STATE]
    assert [d["file_state"] for d in states] == ["STAGING", "SUBMITTED", "ACTIVE", "FINISHED"]
    assert states[0]["staging"] == "true" and states[0]["staging_start"] > 0
    assert states[0]["staging_finished"] == 0
    done = states[-1]
    assert done["staging"] == "false"
    assert done["staging_finished"] - done["staging_start"] >= 250
    assert [d["t_final_transfer_state"] for dest, d in got if dest == COMPLETE] == ["Ok"]
