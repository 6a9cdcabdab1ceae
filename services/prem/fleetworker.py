"""The worker of an HA serving many mobile routers: each served router's policy documents
from MQTT in, one shared table and statuses out (`multinet prem run` with `serves` set).

On the bus each served router is a node of its own, as if it had a worker to itself: its
documents arrive on `policy/<node>`, its statuses leave on `status/<node>`, and its retained
presence (`presence/<node>/prem`) carries the version enforced for it, so a gateway and an NSA
address it exactly as today. The worker's own node (`node` in its settings) has the usual
presence, last will, dead-letter topic and metrics endpoint. Its broker identity must be
allowed to read the served nodes' policy topics and write their status and presence topics
(`deploy/mosquitto/acl`).

As the one-router worker: paho's thread only queues documents; the main thread does all the
work; a document is acknowledged (QoS 1, manual ack) after it was answered, so a crash in
between means redelivery; a retained document is refused; a document whose handling raises
is set aside on the dead-letter topic, the kernel is reconciled back to every router's
enforced state and a `refused` status answers it. A served router's presence says online while
the worker runs and offline when it stops; a worker that dies leaves them online (only its own
presence has a last will): callers then hear "not reached" at their deadline.
"""

from __future__ import annotations

import logging
import queue
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from services import bus, netns
from services.contracts.errors import Problem
from services.contracts.messages import PolicyStatus
from services.contracts.settings import BrokerSettings
from services.prem import routing
from services.prem.backends import make_backend
from services.prem.config import PremSettings
from services.prem.fleet import FleetEnforcer
from services.prem.fleetstore import FleetStore
from services.prem.metrics import PremMetrics, refusal_reason
from services.prem.served import load_served
from services.prem.worker import RETAINED, SERVICE
from services.runtime import ServiceBus, Subscription, on_signals

log = logging.getLogger(__name__)
QUEUE_SIZE = 1024


@dataclass(frozen=True)
class _Document:
    node: str
    payload: bytes
    mid: int
    qos: int
    retained: bool = False


class _Stop:
    """Finish the main loop."""


class FleetWorker:
    """One HA worker for every router of its `serves` file."""

    def __init__(
        self, settings: PremSettings, broker: BrokerSettings, *, netns_name: str | None = None
    ) -> None:
        if settings.serves is None:
            raise ValueError("a fleet worker needs `serves` in its settings")
        self.settings = settings
        self.netns_name = netns_name
        self.routers = load_served(settings.serves)
        self.metrics = PremMetrics(settings.node)
        self.queue: queue.Queue[_Document | _Stop] = queue.Queue(QUEUE_SIZE)
        self.bus = ServiceBus(
            service=SERVICE,
            node=settings.node,
            broker=broker,
            metrics=self.metrics,
            subscriptions=self._subscriptions,
            on_message=self._on_message,
            manual_ack=True,
        )
        self.topics = self.bus.topics
        self._served = {r.node for r in self.routers}
        self._announcers = {
            r.node: bus.Announcer(self.topics, r.node, SERVICE) for r in self.routers
        }
        self.fleet: FleetEnforcer | None = None

    def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT or `stop()`, then stop (main thread only)."""
        on_signals(self.settings.node, self.stop)
        try:
            self.bus.start(self.settings.metrics_listen)
            if self.netns_name is not None:
                netns.enter(self.netns_name)
            backend = make_backend(self.settings)
            routing.ensure_rules(self.settings)
            fleet = FleetEnforcer(
                self.settings, self.routers, backend, FleetStore(self.settings.fleet_store)
            )
            changed = fleet.reconcile()
            self.fleet = fleet
            self._gauges()
            log.info(
                "node %s: started for %d mobile routers (%s back end), %d rules reconciled",
                self.settings.node,
                len(self.routers),
                backend.name,
                changed,
            )
            self.bus.online()
            for router in self.routers:
                self._announce(router.node, online=True)
            self._loop(fleet)
        finally:
            self._shutdown()

    def stop(self) -> None:
        """Ask the main loop to finish (thread-safe)."""
        self.queue.put(_Stop())

    def _loop(self, fleet: FleetEnforcer) -> None:
        while True:
            item = self.queue.get()
            if isinstance(item, _Stop):
                return
            self._document(fleet, item)

    def _document(self, fleet: FleetEnforcer, document: _Document) -> None:
        """Answer one document (applied, refused, or set aside), then acknowledge it."""
        before = fleet.states[document.node].version
        if document.retained:
            status = fleet.refuse(document.node, RETAINED)
        else:
            try:
                status = fleet.handle(document.node, document.payload)
            except Exception as exc:
                status = self._set_aside(fleet, document, exc)
        self.bus.publish(self.topics.status(document.node), status)
        if fleet.states[document.node].version != before:
            self._announce(document.node, online=True)
        self._count(status)
        if document.qos > 0:
            self.bus.client.ack(document.mid, document.qos)

    def _set_aside(
        self, fleet: FleetEnforcer, document: _Document, error: Exception
    ) -> PolicyStatus:
        """On the dead-letter topic; the kernel back to every router's enforced state (if that
        fails too, the worker ends, for its supervisor to restart it)."""
        self.bus.dead_letters.post(
            source=self.topics.policy(document.node),
            input_kind="policy",
            payload=document.payload,
            error=error,
        )
        fleet.reconcile()
        problem = Problem(
            f"not handled: {type(error).__name__} while handling the document; nothing "
            f"changed, the document is set aside on {self.bus.dead_letters.topic}"
        )
        return fleet.refuse(document.node, problem)

    def _announce(self, node: str, *, online: bool) -> None:
        """A served router's retained presence, with the version enforced for it."""
        version = None if self.fleet is None else self.fleet.states[node].version
        message = self._announcers[node].message(online=online, version=version)
        self.bus.publish_latest(self._announcers[node].topic, message)

    def _count(self, status: PolicyStatus) -> None:
        """The worker's counters (every router's documents together) and sizes."""
        if status.result == "applied":
            self.metrics.applied.inc()
            self.metrics.apply_seconds.observe(status.elapsed_ms / 1000)
        elif status.refusals:
            self.metrics.refused.labels(refusal_reason(status.refusals[0])).inc()
        self._gauges()

    def _gauges(self) -> None:
        if self.fleet is not None:
            self.metrics.rules_owned.set(self.fleet.rule_count)
            self.metrics.policies.set(self.fleet.policy_count)

    def _shutdown(self) -> None:
        """Served routers offline, then the worker's own presence, disconnect."""
        if self.fleet is not None:
            for router in self.routers:
                self._announce(router.node, online=False)
            self.fleet.store.close()
        self.bus.close()

    # paho's thread

    def _subscriptions(self) -> list[Subscription]:
        options = SubscribeOptions(qos=1, retainAsPublished=True)
        return [Subscription(self.topics.policy(r.node), options) for r in self.routers]

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        name = self.topics.parse(msg.topic)
        node = None if name is None else name.owner
        if node not in self._served:
            log.warning("node %s: %s is no served router's topic", self.settings.node, msg.topic)
            if msg.qos > 0:
                client.ack(msg.mid, msg.qos)
            return
        self.queue.put(_Document(node, bytes(msg.payload), msg.mid, msg.qos, bool(msg.retain)))
