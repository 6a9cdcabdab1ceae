"""The MQTT client every service uses: MQTT 5, persistent session, last will, credentials.

One place decides how services talk to the broker, so reconnect, session and authentication
behaviour is the same everywhere.

Reconnects back off exponentially with jitter: after a broker restart every client of a
deployment (workers, monitors, gateways) loses its connection at the same instant, and without
jitter they would all come back in lock-step waves at 1, 3, 7 ... seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeGuard, cast

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from services.contracts.messages import Envelope, Presence, encode
from services.contracts.settings import BrokerSettings
from services.contracts.topics import Topics

log = logging.getLogger(__name__)

#: Reconnect delays: the first about RECONNECT_MIN_S, doubling up to RECONNECT_MAX_S.
RECONNECT_MIN_S = 1.0
RECONNECT_MAX_S = 30.0


def client_id(service: str, node: str, topic_root: str) -> str:
    """A stable client id per (service, node, deployment), so the broker keeps its session.

    The topic root takes part so that deployments sharing a broker never share a session.
    """
    tag = hashlib.sha256(topic_root.encode()).hexdigest()[:8]
    return f"{service}-{node}-{tag}"


def make_client(
    settings: BrokerSettings,
    client_id: str,
    *,
    will_topic: str | None = None,
    will: Envelope | None = None,
    manual_ack: bool = False,
    protocol: int = mqtt.MQTTv5,
) -> mqtt.Client:
    """A configured, not yet connected client with a stable id for a persistent session.

    The client's `on_disconnect` and `on_connect_fail` drive its jittered reconnect delay
    (`JitteredBackoff`); services set `on_connect` and `on_message`, not those two.
    """
    client = BusClient(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=protocol,
        manual_ack=manual_ack,
    )
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls:
        client.tls_set(
            ca_certs=str(settings.ca_file) if settings.ca_file else None,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    if will_topic is not None and will is not None:
        client.will_set(will_topic, encode(will), qos=1, retain=True)
    client.backoff.install(client)
    client.on_socket_open = _no_delay
    return client


class BusClient(mqtt.Client):
    """paho's client plus the reconnect backoff `start` resets on each successful CONNACK,
    acknowledging what it reads at once (`quick_ack`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.backoff = JitteredBackoff()
        self._tcp_checked: object = None
        self._tcp = False

    def _sock_recv(self, bufsize: int) -> bytes:
        data = super()._sock_recv(bufsize)
        if bufsize > 1:
            # paho reads a packet's first bytes one at a time, then its body: once a packet
            # is enough (the kernel leaves quick-ack mode only after we answered).
            sock = self._sock
            if sock is not self._tcp_checked:
                # Whether it is TCP, asked once per connection: `socket.family` builds an
                # enum on every call, which cost as much as the setsockopt itself.
                self._tcp_checked, self._tcp = sock, _is_tcp(sock)
            if self._tcp:
                _set_quick_ack(cast(socket.socket, sock))
        return data


def quick_ack(sock: object) -> None:
    """Acknowledge the broker's next segments at once instead of delaying the ACK.

    mosquitto leaves Nagle on for its clients unless configured otherwise (`set_tcp_nodelay`,
    off by default): a second small packet it writes to us (a status after a PUBACK, a
    report after a report) then waits until we acknowledge the first, and Linux delays that
    ACK by up to 40 ms when we have nothing to send back. Measured on a sequential SOAP
    delivery through the gateway (two publishes, two statuses): 48 ms with the delay, 12 ms
    without. Quick-ack mode is not permanent (the kernel leaves it on its own), so it is set
    again after every read; one setsockopt, about a microsecond."""
    if _is_tcp(sock):
        _set_quick_ack(sock)


def _set_quick_ack(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)


def _is_tcp(sock: object) -> TypeGuard[socket.socket]:
    return isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6)


def reconnect_delay(
    attempt: int,
    draw: float,
    *,
    min_s: float = RECONNECT_MIN_S,
    max_s: float = RECONNECT_MAX_S,
) -> float:
    """The wait before reconnect attempt `attempt` (0 = the first after losing the broker).

    "Equal jitter": half of the exponential step is fixed, half drawn (`draw` in [0, 1)), so
    clients spread out but none retries in a tight loop.
    """
    step = min(max_s, min_s * (1 << min(attempt, 32)))
    return step / 2 + step / 2 * draw


class JitteredBackoff:
    """Sets paho's next reconnect delay before each of its waits.

    paho 2.2 calls `on_disconnect` when a connection ends (also after a refused CONNACK) and
    `on_connect_fail` after an attempt that could not connect, each time just before it waits;
    `reconnect_delay_set` makes that wait exactly the delay given (paho's own backoff doubles
    without jitter). The exponent grows with every wait and returns to 0 only on a successful
    CONNACK (`connected`), so a broker that keeps refusing us is not hammered.
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()  # noqa: S311 - spreading retries, not a secret
        self.attempt = 0

    def install(self, client: mqtt.Client) -> None:
        """Become `client`'s disconnect and connect-failure handler."""
        client.on_disconnect = self._next
        client.on_connect_fail = self._next
        self._arm(client)

    def _arm(self, client: mqtt.Client) -> None:
        delay = reconnect_delay(self.attempt, self.rng.random())
        # paho annotates the delays as int, but only adds them to time.time() and sleeps.
        client.reconnect_delay_set(min_delay=delay, max_delay=delay)  # type: ignore[arg-type]

    def connected(self, client: mqtt.Client) -> None:
        """A CONNACK accepted us: the next loss starts again from the shortest delay."""
        self.attempt = 0
        self._arm(client)

    def _next(self, client: mqtt.Client, *args: object) -> None:
        self._arm(client)
        self.attempt += 1


def _no_delay(client: object, userdata: object, sock: object) -> None:
    """Disable Nagle on the broker connection: request/acknowledge exchanges wait on small MQTT
    packets (PUBACKs, statuses) that Nagle would hold until the peer's delayed ACK, 40 ms each
    (measured by the SOAP delivery benchmark)."""
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def connect_properties(settings: BrokerSettings) -> Properties:
    """CONNECT properties: keep the session (and queued QoS 1 messages) for a while offline,
    and announce the largest packet this client accepts, so that the broker never sends it
    (and it never reads into memory) anything larger.

    MQTT 3.1.1 has no properties: a 3.1.1 client (the NSA's metrics connection) announces
    nothing and relies on the broker's own `max_packet_size`, which bounds every message
    anyone can publish."""
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = settings.session_expiry_s
    props.MaximumPacketSize = settings.max_packet_bytes
    return props


def reset_backoff(client: mqtt.Client, reason: object) -> None:
    """After an accepted CONNACK, the next reconnect starts again from the shortest delay.

    `start` does this for every service; a connection made without `start` calls it from its
    own `on_connect`."""
    if isinstance(client, BusClient) and not getattr(reason, "is_failure", False):
        client.backoff.connected(client)


def start(client: mqtt.Client, settings: BrokerSettings, *, timeout_s: float = 10.0) -> None:
    """Connect without a clean start and run the network loop in paho's thread.

    Waits up to `timeout_s` for the first connection; paho keeps retrying after that.
    """
    connected = threading.Event()
    previous: Callable[..., None] | None = client.on_connect

    def on_connect(
        c: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags, reason: object, props: object
    ) -> None:
        # The backoff is reset first (the CONNACK is accepted whatever the handler does); the
        # service's own handler (subscriptions) runs before `start` returns, so that whatever
        # the caller publishes then is already answered on subscribed topics.
        reset_backoff(c, reason)
        if previous is not None:
            previous(c, userdata, flags, reason, props)
        connected.set()

    client.on_connect = on_connect
    client.connect_async(
        settings.host,
        settings.port,
        keepalive=settings.keepalive_s,
        clean_start=False,
        properties=connect_properties(settings),
    )
    client.loop_start()
    if not connected.wait(timeout_s):
        log.warning("broker %s:%d not reachable yet; retrying", settings.host, settings.port)


@dataclass(frozen=True)
class Announcer:
    """One service's presence: its hello (retained, QoS 1) and the same topic as last will, so
    a late subscriber reads whether the service of that node is online."""

    topics: Topics
    node: str
    service: str

    @property
    def topic(self) -> str:
        """`Topics.presence(node, service)`."""
        return self.topics.presence(self.node, self.service)

    def message(self, *, online: bool, version: int | None = None) -> Presence:
        """The presence message (the will is `message(online=False)`)."""
        return Presence(
            sender=self.node, node=self.node, service=self.service, online=online, version=version
        )

    def publish(
        self, client: mqtt.Client, *, online: bool, version: int | None = None
    ) -> mqtt.MQTTMessageInfo:
        """Publish the presence, retained."""
        message = encode(self.message(online=online, version=version))
        return client.publish(self.topic, message, qos=1, retain=True)
