"""Durable topic subscriptions over STOMP: which headers each broker needs.

STOMP has no portable durable subscription; each broker adds its own headers. A durable
subscription keeps the messages published on a topic while its subscriber is away and hands
them over when it subscribes again. Only messages sent with ``persistent: true`` also survive a
broker restart. Both brokers below are exercised by tests/messaging/test_brokers.py.

RabbitMQ (STOMP plug-in; ``CONNECTED`` says ``server: RabbitMQ/x.y``). SUBSCRIBE to
``/topic/<routing key>`` with

* ``id: <name>``: the subscription id; RabbitMQ requires it for a durable subscription;
* ``durable: true`` (``persistent: true`` is the old alias): the queue behind the subscription
  survives the subscriber's disconnection and a broker restart;
* ``auto-delete: false``: the queue is not deleted when its last subscriber leaves;
* ``x-queue-name: <name>``: the name of that queue (without it RabbitMQ derives one from the
  destination and the id, ``stomp-subscription-…``), so an operator can find it.

Nothing is needed on CONNECT. The subscription is the queue: it is found again by the same
destination and id (or ``x-queue-name``). To end it for good, UNSUBSCRIBE with the same ``id``,
``durable`` and ``auto-delete`` headers on a connection that subscribed it (deletes the queue).
RabbitMQ takes the CONNECT ``host`` header as the virtual host: send ``host: /`` (stomp.py:
``vhost="/"``) unless the broker has another one, or the login is refused.

ActiveMQ 5 (``CONNECTED`` says ``server: ActiveMQ/x.y``). CONNECT with ``client-id: <name>``
and SUBSCRIBE with ``activemq.subscriptionName: <name>``; the pair (client id, subscription
name) identifies the durable subscription. Only one connection at a time may use a client id.
We use the same name for both because ActiveMQ's STOMP 1.0/1.2 UNSUBSCRIBE takes the
subscription name as the client id when deleting one: UNSUBSCRIBE with
``activemq.subscriptionName: <name>`` (and the ``id``) on a connection with that client id that
is not subscribed to it at that moment (an active subscription cannot be deleted).

Before the first CONNECTED frame the broker is not known yet, and ``client-id`` must go in that
very CONNECT. ``subscription_headers(None, name)`` (or any unknown kind) therefore answers the
union of both sets: each broker ignores the other's headers (tested on both).

Names: 1 to 200 characters, letters, digits and ``._-`` only (a RabbitMQ queue name, an
ActiveMQ client id and subscription name all accept these without escaping).
"""

from __future__ import annotations

import re

RABBITMQ = "rabbitmq"
ACTIVEMQ = "activemq"
UNKNOWN = "unknown"

_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")


def broker_kind(server_header: str | None) -> str:
    """The broker kind from the CONNECTED frame's ``server`` header (``name/version comments``):
    ``rabbitmq``, ``activemq`` or ``unknown`` (also for ActiveMQ Artemis, ``ActiveMQ-Artemis/…``,
    which these tests have not seen)."""
    product = (server_header or "").strip().split("/", 1)[0].strip().lower()
    if product == "rabbitmq":
        return RABBITMQ
    if product == "activemq":
        return ACTIVEMQ
    return UNKNOWN


def subscription_headers(kind: str | None, name: str) -> tuple[dict[str, str], dict[str, str]]:
    """``(connect_headers, subscribe_headers)`` for a durable topic subscription called ``name``
    on a broker of ``kind`` (see :func:`broker_kind`; ``None`` or unknown: both brokers' headers).

    ``subscribe_headers`` includes ``id``; pass it as the subscription id as well (stomp.py:
    ``conn.subscribe(destination, id=sub["id"], ack="client", headers=sub)``)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"durable subscription name {name!r}: 1 to 200 letters, digits, '.', '_' or '-'"
        )
    rabbitmq = ({}, {"id": name, "durable": "true", "auto-delete": "false", "x-queue-name": name})
    activemq = ({"client-id": name}, {"id": name, "activemq.subscriptionName": name})
    if kind == RABBITMQ:
        return rabbitmq
    if kind == ACTIVEMQ:
        return activemq
    return {**rabbitmq[0], **activemq[0]}, {**rabbitmq[1], **activemq[1]}
