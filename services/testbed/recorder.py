"""Everything the run's services say on the bus, kept in order with the time it arrived.

One subscription to the run's whole topic root. Each message is decoded by its topic (status,
presence, link state, link metrics, binding event, policy document); anything else (the NSA's
explanations, say) is kept raw. Arrival times are CLOCK_MONOTONIC, the clock of the counter
samples and of the actions, so "policy sent -> enforced at the HA" is a difference of two
numbers taken on one clock. Conditions read the log under a lock; `changed` wakes waiters.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from pydantic import BaseModel, ValidationError

from services import bus
from services.contracts import policy_xml
from services.contracts.errors import InvalidInput
from services.contracts.messages import (
    BindingEvent,
    LinkMetrics,
    LinkState,
    PolicyStatus,
    Presence,
    decode,
)
from services.contracts.policy import Forward, Install, Update
from services.contracts.settings import BrokerSettings
from services.contracts.topics import Topics


@dataclass(frozen=True)
class PolicySent:
    """A policy document seen on a node's policy topic (who sent it is not on the wire), with
    the BID each policy it installs or replaces forwards to (None: deleted, or a drop)."""

    node: str
    version: int
    operation: str
    policies: int
    bids: tuple[tuple[str, int | None], ...] = ()

    def bid_of(self, policy_id: str) -> int | None:
        """The BID this document gives `policy_id` (None when it does not name it)."""
        return next((bid for pid, bid in self.bids if pid == policy_id), None)


@dataclass(frozen=True)
class Heard:
    """One message as it arrived: when, on which topic, and what it said."""

    at: float
    topic: str
    message: BaseModel | PolicySent | bytes
    retained: bool


def _policy(payload: bytes) -> PolicySent:
    message = policy_xml.parse(payload)
    op = message.operation
    placed = (*op.policies,) if isinstance(op, Install) else ()
    deleted: tuple[str, ...] = ()
    if isinstance(op, Update):
        placed, deleted = (*op.insert, *op.replace), op.delete
    bids = tuple(
        (p.id, p.action.bid if isinstance(p.action, Forward) else None) for p in placed
    ) + tuple((pid, None) for pid in deleted)
    return PolicySent(
        node=message.node,
        version=message.version,
        operation=op.kind,
        policies=message.policy_count(),
        bids=bids,
    )


#: (last topic segment, segment before it or None, decoder): the first match decodes.
_DECODERS: tuple[tuple[str | None, str | None, Callable[[bytes], BaseModel | PolicySent]], ...] = (
    ("status", None, lambda p: decode(PolicyStatus, p)),
    (None, "presence", lambda p: decode(Presence, p)),
    ("state", None, lambda p: decode(LinkState, p)),
    ("metrics", None, lambda p: decode(LinkMetrics, p)),
    (None, "binding", lambda p: decode(BindingEvent, p)),
    ("policy", None, _policy),
)


def _classify(topic: str, payload: bytes) -> BaseModel | PolicySent | bytes:
    """Decode a payload by its topic; undecodable or unknown payloads stay bytes."""
    parts = topic.split("/")
    last, before = parts[-1], parts[-2] if len(parts) > 1 else ""
    for want_last, want_before, decoder in _DECODERS:
        if want_last not in (None, last) or want_before not in (None, before):
            continue
        try:
            return decoder(payload)
        except (ValidationError, InvalidInput, ValueError):
            return payload
    return payload


class Recorder:
    """A bus client that keeps every message of one topic root."""

    def __init__(self, broker: BrokerSettings) -> None:
        self.topics = Topics(broker.topic_root)
        self._broker = broker.model_copy(update={"session_expiry_s": 0})
        self._lock = threading.Condition()
        self._log: list[Heard] = []
        self._subscribed = threading.Event()
        self.client = bus.make_client(self._broker, f"testbed-recorder-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message

    def start(self, timeout_s: float = 10.0) -> None:
        """Connect and subscribe; return once the subscription is in place."""
        bus.start(self.client, self._broker)
        if not self._subscribed.wait(timeout_s):
            raise TimeoutError(f"no subscription to {self.topics.root}/# within {timeout_s} s")

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> float:
        """Publish (QoS 1) and return when it was handed to the broker."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(5.0)
        return time.monotonic()

    def _on_connect(self, client: mqtt.Client, *args: object) -> None:
        client.subscribe(f"{self.topics.root}/#", qos=1)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        payload = bytes(msg.payload)
        if not payload:
            return  # a cleared retained message
        heard = Heard(now, msg.topic, _classify(msg.topic, payload), bool(msg.retain))
        with self._lock:
            self._log.append(heard)
            self._lock.notify_all()

    def since(self, start: float) -> list[Heard]:
        """Every message that arrived at or after `start` (retained ones included)."""
        with self._lock:
            return [h for h in self._log if h.at >= start]

    def all(self) -> list[Heard]:
        """Everything heard so far."""
        with self._lock:
            return list(self._log)

    def first(self, predicate: Callable[[Heard], bool], *, since: float = 0.0) -> Heard | None:
        """The first message since `since` that satisfies `predicate`."""
        return next((h for h in self.since(since) if predicate(h)), None)

    def wait(self, timeout_s: float) -> None:
        """Block until a message arrives or `timeout_s` passes."""
        with self._lock:
            self._lock.wait(timeout_s)

    def heard_on(self, topic: str) -> bool:
        """Whether anything was heard on `topic`."""
        with self._lock:
            return any(h.topic == topic for h in self._log)

    def online(self, node: str, service: str) -> bool:
        """Whether the last presence of (node, service) says online."""
        topic = self.topics.presence(node, service)
        with self._lock:
            last = next((h for h in reversed(self._log) if h.topic == topic), None)
        return last is not None and isinstance(last.message, Presence) and last.message.online
