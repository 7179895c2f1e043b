"""The STOMP brokers the messaging tests use, and a small bounded stomp.py client for them.

.ci/run starts RabbitMQ (STOMP plug-in) and ActiveMQ and exports where they listen:
ASO_TEST_STOMP_RABBITMQ (default 127.0.0.1:61613) and ASO_TEST_STOMP_ACTIVEMQ (default
127.0.0.1:61614); both take guest/guest. A broker that does not answer makes its fixture FAIL
(never skip) with a message naming the variable and .ci/run. Use the fixtures with
``from tests.brokers import rabbitmq_broker, activemq_broker, stomp_broker  # noqa: F401``.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
from dataclasses import dataclass

import pytest
import stomp
from stomp import exception as stomp_exception

RABBITMQ_ENV = "ASO_TEST_STOMP_RABBITMQ"
ACTIVEMQ_ENV = "ASO_TEST_STOMP_ACTIVEMQ"


@dataclass(frozen=True)
class Broker:
    name: str  # "rabbitmq" or "activemq", as aso.messaging.durable.broker_kind answers
    host: str
    port: int
    user: str = "guest"
    password: str = "guest"
    env: str = ""  # the variable it came from, for messages

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def _from_env(name: str, env: str, default: str) -> Broker:
    value = os.environ.get(env) or default
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{env}={value!r}: expected HOST:PORT")
    return Broker(name, host, int(port), "guest", "guest", env)


def rabbitmq() -> Broker:
    """RabbitMQ's STOMP listener, from ASO_TEST_STOMP_RABBITMQ (default 127.0.0.1:61613)."""
    return _from_env("rabbitmq", RABBITMQ_ENV, "127.0.0.1:61613")


def activemq() -> Broker:
    """ActiveMQ's STOMP listener, from ASO_TEST_STOMP_ACTIVEMQ (default 127.0.0.1:61614)."""
    return _from_env("activemq", ACTIVEMQ_ENV, "127.0.0.1:61614")


def require(broker: Broker, timeout: float = 3.0) -> Broker:
    """``broker`` if something listens on its port, else fail the test saying how to fix it."""
    try:
        socket.create_connection((broker.host, broker.port), timeout=timeout).close()
    except OSError as e:
        pytest.fail(
            f"{broker.name} STOMP broker not reachable at {broker.address} ({e}); "
            f"run .ci/run (it starts the brokers) or set {broker.env}=HOST:PORT",
            pytrace=False,
        )
    return broker


@pytest.fixture
def rabbitmq_broker() -> Broker:
    return require(rabbitmq())


@pytest.fixture
def activemq_broker() -> Broker:
    return require(activemq())


@pytest.fixture(params=["rabbitmq", "activemq"])
def stomp_broker(request) -> Broker:
    """Each broker in turn."""
    return require(rabbitmq() if request.param == "rabbitmq" else activemq())


class Client:
    """A stomp.py STOMP 1.2 connection whose every wait is bounded by ``timeout`` seconds.

    Frames arriving on the connection go to ``messages`` (MESSAGE), ``receipts`` and
    ``errors``; ``server`` is the CONNECTED frame's ``server`` header."""

    def __init__(self, broker: Broker, headers: dict[str, str] | None = None, timeout: float = 5.0):
        self.broker, self.timeout = broker, timeout
        self.messages: queue.Queue = queue.Queue()
        self.receipts: queue.Queue = queue.Queue()
        self.errors: list = []
        self.server = ""
        self._connected = threading.Event()
        self._failed = threading.Event()
        # vhost "/": RabbitMQ takes the host header as the virtual host; ActiveMQ ignores it.
        self.conn = stomp.Connection12(
            [(broker.host, broker.port)], vhost="/", timeout=timeout, reconnect_attempts_max=1
        )
        self.conn.set_listener("test", _Listener(self))
        self.conn.connect(broker.user, broker.password, wait=False, headers=dict(headers or {}))
        if not self._connected.wait(timeout) or self._failed.is_set():
            errors = list(self.errors)
            self.close()
            raise AssertionError(f"STOMP CONNECT to {broker.name} at {broker.address}: {errors or 'no answer'}")

    def subscribe(self, destination: str, sub_id: str, headers: dict[str, str] | None = None,
                  ack: str = "client") -> None:
        self.conn.subscribe(destination, id=sub_id, ack=ack, headers=dict(headers or {}))

    def unsubscribe(self, sub_id: str, headers: dict[str, str] | None = None) -> dict:
        receipt = f"unsub-{sub_id}"
        self.conn.unsubscribe(id=sub_id, headers={**(headers or {}), "receipt": receipt})
        return self.wait_receipt(receipt)

    def send(self, destination: str, body: str, **headers: str) -> None:
        self.conn.send(destination, body, headers=headers)

    def wait_receipt(self, receipt_id: str) -> dict:
        try:
            while True:
                headers = self.receipts.get(timeout=self.timeout)
                if headers.get("receipt-id") == receipt_id:
                    return headers
        except queue.Empty:
            raise AssertionError(
                f"{self.broker.name}: no RECEIPT {receipt_id} within {self.timeout} s; errors: {self.errors}"
            ) from None

    def receive(self, count: int) -> list[tuple[dict, str]]:
        """The next ``count`` MESSAGE frames as (headers, body); fails after ``timeout``."""
        got = []
        try:
            while len(got) < count:
                got.append(self.messages.get(timeout=self.timeout))
        except queue.Empty:
            raise AssertionError(
                f"{self.broker.name}: {len(got)} of {count} messages within {self.timeout} s: "
                f"{[b for _, b in got]}; errors: {self.errors}"
            ) from None
        return got

    def nothing_within(self, seconds: float) -> list[tuple[dict, str]]:
        """Whatever MESSAGE frames arrive within ``seconds`` (expected: none)."""
        try:
            return [self.messages.get(timeout=seconds)]
        except queue.Empty:
            return []

    def ack(self, headers: dict) -> None:
        """ACK a MESSAGE (STOMP 1.2: by its ``ack`` header); with ack="client" this is cumulative."""
        self.conn.ack(headers["ack"])

    def leave(self) -> None:
        """DISCONNECT and wait for its receipt: the broker has processed every earlier frame
        (SUBSCRIBE, ACK) before it answers. ``close()`` then only stops the transport."""
        self.conn.send_frame("DISCONNECT", {"receipt": "bye"})
        self.wait_receipt("bye")
        self._left = True

    def close(self) -> None:
        try:
            if not getattr(self, "_left", False) and self.conn.is_connected():
                self.conn.disconnect(receipt=None)
        except (stomp_exception.NotConnectedException, OSError):
            pass  # the broker closed the socket first
        finally:
            self.conn.transport.stop()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Listener:
    def __init__(self, client: Client):
        self.client = client

    def on_connected(self, frame) -> None:
        self.client.server = frame.headers.get("server", "")
        self.client._connected.set()

    def on_error(self, frame) -> None:
        self.client.errors.append((frame.headers.get("message"), frame.body))
        if not self.client._connected.is_set():
            self.client._failed.set()
            self.client._connected.set()

    def on_message(self, frame) -> None:
        self.client.messages.put((frame.headers, frame.body))

    def on_receipt(self, frame) -> None:
        self.client.receipts.put(frame.headers)

    def on_disconnected(self) -> None:
        if not self.client._connected.is_set():
            self.client._failed.set()
            self.client._connected.set()
