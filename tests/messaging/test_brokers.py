"""Smoke tests against the real STOMP brokers .ci/run starts (RabbitMQ and ActiveMQ), with
stomp.py over STOMP 1.2: ordered persistent delivery with a receipt, cumulative client acks, and
durable topic subscriptions built from aso.messaging.durable.subscription_headers."""

from __future__ import annotations

import uuid

import pytest

from aso.messaging.durable import broker_kind, subscription_headers
from tests.brokers import Broker, Client, stomp_broker  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(30)


def _topic() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:12]
    return f"/topic/aso.test.{tag}", f"aso-test-{tag}"


def _publish(broker: Broker, destination: str, bodies: list[str]) -> None:
    """Send ``bodies`` as persistent messages, a receipt on the last, and wait for it."""
    with Client(broker) as pub:
        for i, body in enumerate(bodies):
            headers = {"persistent": "true"}
            if i == len(bodies) - 1:
                headers["receipt"] = f"sent-{body}"
            pub.send(destination, body, **headers)
        pub.wait_receipt(f"sent-{bodies[-1]}")


def test_connected_frame_names_the_broker(stomp_broker):  # noqa: F811
    with Client(stomp_broker) as client:
        assert broker_kind(client.server) == stomp_broker.name, client.server


def test_persistent_messages_arrive_in_order_and_cumulative_ack(stomp_broker):  # noqa: F811
    destination, _ = _topic()
    bodies = ["one", "two", "three"]
    with Client(stomp_broker) as client:
        client.subscribe(destination, "sub-1", ack="client")
        # a receipt for the SUBSCRIBE: the subscription exists before anything is sent
        client.conn.send_frame("SUBSCRIBE", {"destination": destination, "id": "probe",
                                             "ack": "auto", "receipt": "subscribed"})
        client.wait_receipt("subscribed")
        client.unsubscribe("probe")
        _publish(stomp_broker, destination, bodies)
        got = client.receive(3)
        assert [body for _, body in got] == bodies
        assert all(h["subscription"] == "sub-1" for h, _ in got)
        assert all(h.get("persistent") == "true" for h, _ in got), [h for h, _ in got]
        client.ack(got[-1][0])  # cumulative: acknowledges all three
        assert client.nothing_within(0.5) == []
        assert client.errors == []


def _durable_round(broker: Broker, kind: str | None) -> None:
    destination, name = _topic()
    connect, subscribe = subscription_headers(kind, name)

    # 1. subscribe durably, then go away
    with Client(broker, connect) as sub:
        sub.subscribe(destination, subscribe["id"], subscribe)
        sub.leave()  # processed after the SUBSCRIBE

    # 2. while away, three persistent messages are published
    bodies = ["a", "b", "c"]
    _publish(broker, destination, bodies)

    # 3. back: the durable subscription kept them, in order; ack them cumulatively
    with Client(broker, connect) as sub:
        sub.subscribe(destination, subscribe["id"], subscribe)
        got = sub.receive(3)
        assert [body for _, body in got] == bodies
        sub.ack(got[-1][0])
        assert sub.nothing_within(0.5) == []
        sub.leave()

    # 4. back again: the ack was kept, nothing is redelivered
    with Client(broker, connect) as sub:
        sub.subscribe(destination, subscribe["id"], subscribe)
        assert sub.nothing_within(1.0) == []
        assert sub.errors == []
        _delete(broker, sub, connect, subscribe)

    # 5. deleted for good: what is published now is kept for nobody
    _publish(broker, destination, ["lost"])
    with Client(broker, connect) as sub:
        sub.subscribe(destination, subscribe["id"], subscribe)
        assert sub.nothing_within(0.5) == []
        _delete(broker, sub, connect, subscribe)


def _delete(broker: Broker, sub: Client, connect: dict, subscribe: dict) -> None:
    """End the durable subscription ``sub`` is subscribed with, as the docstring of
    aso.messaging.durable says, then leave ``sub`` unsubscribed."""
    if broker.name == "rabbitmq":
        # UNSUBSCRIBE with the durable headers deletes the queue behind the subscription
        sub.unsubscribe(subscribe["id"], subscribe)
    else:
        # ActiveMQ cannot delete an active durable subscription: stop consuming (plain
        # UNSUBSCRIBE keeps it), then delete it from a connection that is not using it
        sub.unsubscribe(subscribe["id"])
        sub.leave()
        with Client(broker, connect) as other:
            other.unsubscribe(subscribe["id"], subscribe)
            assert other.errors == []


def test_durable_subscription_keeps_messages_while_away(stomp_broker):  # noqa: F811
    with Client(stomp_broker) as probe:
        kind = broker_kind(probe.server)
    _durable_round(stomp_broker, kind)


def test_durable_subscription_with_unknown_broker_headers(stomp_broker):  # noqa: F811
    """Before the first CONNECTED frame the kind is unknown: the union of both brokers' headers
    must work on each of them."""
    _durable_round(stomp_broker, None)


def test_unacked_messages_of_a_durable_subscription_come_back(stomp_broker):  # noqa: F811
    """ack="client" really holds: what was received but not acked is delivered again."""
    destination, name = _topic()
    connect, subscribe = subscription_headers(None, name)
    with Client(stomp_broker, connect) as sub:
        sub.subscribe(destination, subscribe["id"], subscribe)
        sub.leave()
    _publish(stomp_broker, destination, ["x", "y", "z"])
    with Client(stomp_broker, connect) as sub:
        sub.subscribe(destination, subscribe["id"], subscribe)
        got = sub.receive(3)
        sub.ack(got[0][0])  # only the first one
        sub.leave()
    with Client(stomp_broker, connect) as sub:
        sub.subscribe(destination, subscribe["id"], subscribe)
        again = sub.receive(2)
        assert [body for _, body in again] == ["y", "z"]
        sub.ack(again[-1][0])
        _delete(stomp_broker, sub, connect, subscribe)
