import pytest

from aso.messaging.durable import (
    ACTIVEMQ,
    RABBITMQ,
    UNKNOWN,
    broker_kind,
    subscription_headers,
)


@pytest.mark.parametrize(
    ("server", "kind"),
    [
        ("RabbitMQ/3.10.8", RABBITMQ),
        ("RabbitMQ/4.0.5 ", RABBITMQ),
        ("rabbitmq/3", RABBITMQ),
        ("ActiveMQ/5.17.2", ACTIVEMQ),
        ("ActiveMQ/6.1.0", ACTIVEMQ),
        ("ActiveMQ-Artemis/2.31.2 ActiveMQ Artemis Messaging Engine", UNKNOWN),
        ("Apache/1.0", UNKNOWN),
        ("", UNKNOWN),
        (None, UNKNOWN),
    ],
)
def test_broker_kind(server, kind):
    assert broker_kind(server) == kind


def test_rabbitmq_headers():
    assert subscription_headers(RABBITMQ, "aso-fts") == (
        {},
        {"id": "aso-fts", "durable": "true", "auto-delete": "false", "x-queue-name": "aso-fts"},
    )


def test_activemq_headers():
    assert subscription_headers(ACTIVEMQ, "aso-fts") == (
        {"client-id": "aso-fts"},
        {"id": "aso-fts", "activemq.subscriptionName": "aso-fts"},
    )


@pytest.mark.parametrize("kind", [None, UNKNOWN, "artemis"])
def test_unknown_kind_gets_both(kind):
    connect, subscribe = subscription_headers(kind, "n")
    assert connect == {"client-id": "n"}
    assert subscribe == {
        "id": "n",
        "durable": "true",
        "auto-delete": "false",
        "x-queue-name": "n",
        "activemq.subscriptionName": "n",
    }


@pytest.mark.parametrize("name", ["", "a b", "a:b", "x" * 201, "é", None, 3])
def test_bad_names_are_refused(name):
    with pytest.raises(ValueError, match="durable subscription name"):
        subscription_headers(RABBITMQ, name)
