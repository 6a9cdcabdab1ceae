"""An MQTT 5 test client driven step by step, with every acknowledgement recorded.

It is the services' own client (`services.bus.make_client`: MQTT 5, credentials, TLS, will),
driven by `loop()` calls in the test's thread, so there are no threads and no sleeps: each
wait polls until its condition holds or a deadline passes.

Ordering argument used by the "never delivered" checks: mosquitto routes a QoS 1 PUBLISH (or
drops it, when the ACL says no) before it sends the PUBACK, and a subscriber's session gets its
messages in routing order. So once a publisher holds the PUBACK of X, a message published
after that reaches each subscriber after X would have; receiving that later "barrier" message
without X proves X was not delivered.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from services import bus
from services.contracts.messages import Envelope
from services.contracts.settings import BrokerSettings

NOT_AUTHORIZED = 0x87
DEADLINE_S = 5.0


@dataclass(frozen=True)
class Received:
    """One delivered message."""

    topic: str
    payload: bytes


class Probe:
    """One connection as one user; records CONNACK, SUBACKs, PUBACKs and messages."""

    def __init__(
        self,
        settings: BrokerSettings,
        *,
        client_id: str | None = None,
        will_topic: str | None = None,
        will: Envelope | None = None,
        persistent: bool = False,
    ) -> None:
        # A persistent client keeps its session (and queued QoS 1 messages) across
        # connections, as the services do; the others start clean and leave nothing behind.
        self.persistent = persistent
        self.settings = settings.model_copy(update={"session_expiry_s": 600 if persistent else 0})
        user = settings.username or "anonymous"
        self.client_id = client_id or f"acl-test-{user}-{uuid.uuid4().hex[:8]}"
        self.client = bus.make_client(
            self.settings,
            self.client_id,
            will_topic=will_topic,
            will=will,
        )
        self.connack: ReasonCode | None = None
        self.disconnected = False
        self.subacks: dict[int, list[ReasonCode]] = {}
        self.pubacks: dict[int, ReasonCode] = {}
        self.messages: list[Received] = []
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message

    def connect(self) -> ReasonCode:
        """Send CONNECT (a clean start unless persistent) and return the CONNACK's reason
        code. A persistent probe may connect again after `close()`."""
        self.connack = None
        self.disconnected = False
        self.client.connect(
            self.settings.host,
            self.settings.port,
            keepalive=self.settings.keepalive_s,
            clean_start=not self.persistent,
            properties=bus.connect_properties(self.settings),
        )
        self.pump(lambda: self.connack is not None, what="CONNACK")
        assert self.connack is not None
        return self.connack

    def subscribe(self, topic: str) -> ReasonCode:
        """Subscribe at QoS 1; the SUBACK's reason code."""
        result, mid = self.client.subscribe(topic, qos=1)
        assert result == mqtt.MQTT_ERR_SUCCESS, mqtt.error_string(result)
        assert mid is not None
        self.pump(lambda: mid in self.subacks, what=f"SUBACK for {topic}")
        (code,) = self.subacks[mid]
        return code

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> ReasonCode:
        """Publish (not retained); at QoS 1 the PUBACK's reason code, at QoS 0 'sent'."""
        info = self.client.publish(topic, payload, qos=qos)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, mqtt.error_string(info.rc)
        self.pump(lambda: info.mid in self.pubacks, what=f"PUBACK for {topic}")
        return self.pubacks[info.mid]

    def wait_for(self, payload: bytes) -> list[Received]:
        """Every message received until (and with) the first one whose payload contains
        `payload`."""
        self.pump(lambda: any(payload in m.payload for m in self.messages), what=repr(payload))
        return list(self.messages)

    def disconnect_with_will(self) -> None:
        """DISCONNECT with reason 0x04: the broker publishes the will (MQTT 5)."""
        code = ReasonCode(PacketTypes.DISCONNECT, identifier=0x04)
        self.client.disconnect(reasoncode=code)
        self.pump(lambda: self.disconnected, what="disconnection")

    def close(self) -> None:
        """Disconnect normally (no will) if still connected."""
        if not self.disconnected and self.client.is_connected():
            self.client.disconnect()
            self.pump(lambda: self.disconnected, what="disconnection", deadline_s=1.0)
        sock = self.client.socket()
        if sock is not None:
            sock.close()

    def disconnected_now(self) -> bool:
        """Whether the broker closed the connection (a condition for `pump`)."""
        return self.disconnected

    def pump(self, done: Callable[[], bool], *, what: str, deadline_s: float = DEADLINE_S) -> None:
        """Run the client's network loop until `done()` or the deadline (AssertionError)."""
        deadline = monotonic() + deadline_s
        while not done():
            if monotonic() > deadline:
                raise AssertionError(
                    f"{self.settings.username}: no {what} within {deadline_s}s; "
                    f"received {[m.topic for m in self.messages]}"
                )
            if self.disconnected:
                raise AssertionError(f"{self.settings.username}: disconnected before {what}")
            self.client.loop(timeout=0.05)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: object,
    ) -> None:
        self.connack = reason

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: object,
    ) -> None:
        self.disconnected = True

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reasons: list[ReasonCode],
        properties: object,
    ) -> None:
        self.subacks[mid] = reasons

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason: ReasonCode,
        properties: object,
    ) -> None:
        self.pubacks[mid] = reason

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self.messages.append(Received(msg.topic, bytes(msg.payload)))


def pump_all(
    probes: list[Probe], done: Callable[[], bool], *, deadline_s: float = DEADLINE_S
) -> None:
    """Run several clients' loops in turn until `done()` or the deadline (AssertionError)."""
    deadline = monotonic() + deadline_s
    while not done():
        if monotonic() > deadline:
            got = [[m.payload for m in p.messages] for p in probes]
            raise AssertionError(f"condition not met within {deadline_s}s; received {got}")
        for probe in probes:
            probe.client.loop(timeout=0.01)
