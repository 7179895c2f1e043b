"""One STOMP 1.2 connection to one broker host, over ``stomp.py``: sending with a receipt per
batch, subscribing with acknowledgements, and the broker list turned into addresses.

A broker alias (``dashb-mb.cern.ch:61113``) is resolved to every IPv4 address behind it, one
connection each, as Rucio's receiver does: a message published on any host of the alias
reaches the subscriber on that host only.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger("aso.stomp")

DEFAULT_PORT = 61613


class LinkError(Exception):
    """The broker could not be reached, refused us, or did not confirm in time."""


@dataclass(frozen=True)
class BrokerAddress:
    #: the name as configured (for logs), and the address connected to
    name: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}" + (f" ({self.name})" if self.name != self.host else "")


def parse_broker(spec: str) -> tuple[str, int]:
    """``host`` or ``host:port`` (``[v6]:port`` too) -> (host, port)."""
    spec = spec.strip()
    if not spec:
        raise ValueError("an empty broker address")
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif spec.count(":") == 1:
        host, port = spec.split(":")
    else:
        host, port = spec, ""
    if not host:
        raise ValueError(f"{spec!r} has no host")
    if port and (not port.isdigit() or not 0 < int(port) < 65536):
        raise ValueError(f"{spec!r}: the port must be a number from 1 to 65535")
    return host, int(port) if port else DEFAULT_PORT


def resolve(specs: Sequence[str]) -> list[BrokerAddress]:
    """Every IPv4 address of every broker alias (an alias that does not resolve is kept as
    its name: connecting to it will say why)."""
    addresses: list[BrokerAddress] = []
    for spec in specs:
        host, port = parse_broker(spec)
        try:
            infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
            ips = sorted({info[4][0] for info in infos})
        except OSError:
            ips = [host]
        for ip in ips:
            address = BrokerAddress(host, ip, port)
            if address not in addresses:
                addresses.append(address)
    return addresses


#: (headers, body) of a received message
MessageHandler = Callable[[dict, str], None]


class _Listener:
    def __init__(self, link: StompLink):
        self.link = link

    def on_connected(self, frame) -> None:
        self.link.server = frame.headers.get("server", "")

    def on_receipt(self, frame) -> None:
        self.link._receipt(frame.headers.get("receipt-id", ""))

    def on_error(self, frame) -> None:
        self.link.last_error = (frame.headers.get("message") or frame.body or "error frame")[:500]
        log.warning("broker %s: %s", self.link.address, self.link.last_error)
        self.link._fail_waiters()

    def on_disconnected(self) -> None:
        self.link._fail_waiters()

    def on_heartbeat_timeout(self) -> None:
        log.warning("broker %s: heart-beat timeout", self.link.address)

    def on_message(self, frame) -> None:
        if self.link.on_message is not None:
            self.link.on_message(dict(frame.headers), frame.body)


class StompLink:
    """A connection to one broker address; not thread-safe for sending (one sender each)."""

    _ids = itertools.count(1)

    def __init__(self, address: BrokerAddress, user: str = "", password: str = "", *,
                 heartbeats: tuple[int, int] = (10000, 10000), on_message: MessageHandler | None = None,
                 connect_headers: dict | None = None, timeout: float = 10.0, vhost: str = "/"):
        self.address = address
        #: STOMP's ``host`` header: RabbitMQ takes it as the virtual host (ActiveMQ ignores it)
        self.vhost = vhost
        self.user, self.password = user, password
        self.heartbeats = heartbeats
        self.on_message = on_message
        self.connect_headers = dict(connect_headers or {})
        self.timeout = timeout
        #: the broker's CONNECTED ``server`` header (RabbitMQ/3.10.8, ActiveMQ/5.17.2)
        self.server = ""
        self.last_error = ""
        self._conn = None
        self._cond = threading.Condition()
        self._receipts: set[str] = set()
        self._broken = 0

    def connect(self) -> None:
        import stomp

        self.close()
        conn = stomp.Connection12([(self.address.host, self.address.port)], heartbeats=self.heartbeats,
                                  reconnect_attempts_max=1, timeout=self.timeout, prefer_localhost=False,
                                  try_loopback_connect=False, vhost=self.vhost)
        conn.set_listener("aso", _Listener(self))
        try:
            conn.connect(self.user or None, self.password or None, wait=True, headers=dict(self.connect_headers))
        except Exception as exc:
            with contextlib.suppress(Exception):  # it never connected: nothing to close cleanly
                conn.disconnect()
            raise LinkError(f"cannot connect to STOMP broker {self.address}: {exc or type(exc).__name__}") from None
        if not conn.is_connected():
            raise LinkError(f"STOMP broker {self.address} refused the connection: {self.last_error or 'no CONNECTED frame'}")
        self._conn = conn

    def is_connected(self) -> bool:
        return self._conn is not None and self._conn.is_connected()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.disconnect()
            except Exception as exc:  # the socket may be gone already
                log.debug("disconnect from %s: %s", self.address, exc)

    # -- receipts ------------------------------------------------------------------------

    def _receipt(self, receipt_id: str) -> None:
        with self._cond:
            self._receipts.add(receipt_id)
            self._cond.notify_all()

    def _fail_waiters(self) -> None:
        with self._cond:
            self._broken += 1
            self._cond.notify_all()

    def _wait_receipt(self, receipt_id: str, broken_before: int) -> None:
        with self._cond:
            ok = self._cond.wait_for(lambda: receipt_id in self._receipts or self._broken != broken_before,
                                     timeout=self.timeout)
            if receipt_id in self._receipts:
                self._receipts.discard(receipt_id)
                return
        reason = self.last_error or ("the connection broke" if ok else f"no receipt within {self.timeout:g} s")
        raise LinkError(f"STOMP broker {self.address} did not confirm: {reason}")

    # -- sending -------------------------------------------------------------------------

    def send_batch(self, messages: Sequence[tuple[str, str, dict]]) -> None:
        """Send (destination, body, headers) messages; returns once the broker confirmed the
        last one (frames on one connection are handled in order, so it has them all)."""
        if not messages:
            return
        if not self.is_connected():
            raise LinkError(f"not connected to STOMP broker {self.address}")
        receipt = f"aso-{next(self._ids)}"
        with self._cond:
            broken = self._broken
        try:
            for i, (dest, body, headers) in enumerate(messages):
                extra = dict(headers)
                if i == len(messages) - 1:
                    extra["receipt"] = receipt
                self._conn.send(dest, body, headers=extra)
        except Exception as exc:
            raise LinkError(f"sending to STOMP broker {self.address} failed: {exc or type(exc).__name__}") from None
        self._wait_receipt(receipt, broken)

    # -- receiving -----------------------------------------------------------------------

    def subscribe(self, destination: str, subscription_id: str, ack: str = "client", headers: dict | None = None) -> None:
        if not self.is_connected():
            raise LinkError(f"not connected to STOMP broker {self.address}")
        self._conn.subscribe(destination, subscription_id, ack=ack, headers=dict(headers or {}))

    def ack(self, ack_id: str) -> None:
        """Acknowledge a message (and, in ``client`` mode, every one before it)."""
        if self.is_connected():
            self._conn.ack(ack_id)
