"""The PREM worker process: policy documents from MQTT in, kernel state and statuses out.

Threads: paho's network thread only queues incoming documents; the link watcher only queues
usability changes; the main thread takes both from one bounded queue and does all the work,
so the enforcer never runs twice at once. A document is acknowledged to the broker (QoS 1,
manual ack) only after it was applied, refused or set aside as a dead letter, so a crash in
between means redelivery.

A document whose handling raises (a bug the refusals did not foresee) is the document's
fault, not the worker's: it is set aside on the node's dead-letter topic, answered with a
`refused` status, acknowledged, and the kernel is reconciled back to the enforced state. Only
when that reconciliation fails too does the worker exit (its own invariant is broken); the
document was acknowledged by then, so the restarted worker is not stuck behind it.
"""

from __future__ import annotations

import logging
import queue
import signal
from dataclasses import dataclass
from types import FrameType

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from services import bus, netns
from services.contracts import policy_xml
from services.contracts.errors import Problem
from services.contracts.messages import Envelope, PolicyStatus, encode
from services.contracts.settings import BrokerSettings
from services.contracts.topics import Topics
from services.deadletter import DeadLetters
from services.prem import routing
from services.prem.config import PremSettings
from services.prem.enforcer import Enforcer, Reply
from services.prem.linkwatch import LinkWatcher
from services.prem.metrics import PremMetrics
from services.prem.node import Fatal, Stop, Usability, start_enforcement

log = logging.getLogger(__name__)
QUEUE_SIZE = 256


@dataclass(frozen=True)
class _Document:
    payload: bytes
    mid: int
    qos: int
    retained: bool = False


#: Why a retained policy document is refused. The broker hands a retained message to every new
#: subscription, so the worker would get it again at each reconnect, long after newer versions:
#: a replay the version check catches only while the enforced version is known (not after the
#: state file was lost). Policy documents are never published retained. The worker subscribes
#: with MQTT 5's Retain As Published, so the flag also tells a document published retained
#: just now (without it, the broker clears the flag on delivery to existing subscriptions, and
#: the document would be applied; the broker would still replay it later).
RETAINED = Problem(
    "retained policy document: the broker replays it at every subscription; policy documents "
    "must be published with retain off",
    field="retain",
)


_Item = _Document | Usability | Fatal | Stop


class PremWorker:
    """One node's worker: owns the MQTT session, the link watcher and the enforcer."""

    def __init__(
        self, settings: PremSettings, broker: BrokerSettings, *, netns_name: str | None = None
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.netns_name = netns_name
        self.topics = Topics(broker.topic_root)
        self.queue: queue.Queue[_Item] = queue.Queue(QUEUE_SIZE)
        self.presence = bus.Announcer(self.topics, settings.node, "prem")
        self.client = bus.make_client(
            broker,
            bus.client_id("prem", settings.node, broker.topic_root),
            will_topic=self.presence.topic,
            will=self.presence.message(online=False),
            manual_ack=True,
        )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.enforcer: Enforcer | None = None
        self.watcher: LinkWatcher | None = None
        self.metrics = PremMetrics(settings.node)
        self.metrics.watch_client(self.client)
        self.dead_letters = DeadLetters(
            self.client, self.topics, settings.node, "prem", self.metrics.dead_letters
        )
        #: The version the last retained presence announced.
        self._announced: int | None = None

    def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT, then stop cleanly."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        # The bus connection lives in the namespace we were started in (the management side);
        # everything created after `enter` (netlink, nftables, iptc, watcher thread) lives in
        # the node's namespace. The metrics endpoint, opened first, stays on the management
        # side with the bus.
        self.metrics.serve(self.settings.metrics_listen)
        bus.start(self.client, self.broker)
        if self.netns_name is not None:
            netns.enter(self.netns_name)
        enforcer, self.watcher, changed = start_enforcement(
            self.settings, self._on_usability, self._on_fatal
        )
        self.enforcer = enforcer
        self._record(None)
        log.info(
            "node %s: started (%s back end), version %d enforced, %d rules reconciled",
            self.settings.node,
            enforcer.backend.name,
            enforcer.state.version,
            changed,
        )
        self._publish_presence(online=True)
        try:
            self._serve(enforcer)
        finally:
            self._shutdown(enforcer)

    def _serve(self, enforcer: Enforcer) -> None:
        while True:
            item = self.queue.get()
            if isinstance(item, Stop):
                return
            if isinstance(item, Fatal):
                raise RuntimeError(
                    "link watcher failed; exiting so the supervisor restarts us"
                ) from item.error
            if isinstance(item, Usability):
                status = enforcer.handle_unusable(item.unusable)
                if status is not None:
                    self._publish_status(status)
                    self._record(status)
                continue
            self._document(enforcer, item)

    def _document(self, enforcer: Enforcer, item: _Document) -> None:
        """Answer one document (applied, refused, or set aside), then acknowledge it."""
        try:
            reply = (
                Reply(enforcer.refuse(RETAINED)) if item.retained else enforcer.handle(item.payload)
            )
            if reply.forward is not None:
                # Scheme 2: the MR's worker gets the mirrored uplink set from us, QoS 1.
                document = policy_xml.render(reply.forward)
                self.client.publish(self.topics.policy(reply.forward.node), document, qos=1)
            self._publish_status(reply.status)
        except Exception as exc:
            self.dead_letters.post(
                source=self.topics.policy(self.settings.node),
                input_kind="policy",
                payload=item.payload,
                error=exc,
            )
            self._ack(item)  # before anything else can fail: never redelivered
            status = self._recover(enforcer, exc)
        else:
            self._ack(item)
            status = reply.status
        if status.version != self._announced:
            # The retained presence is what a gateway or NSA replica that starts later
            # reads first: it must carry the version enforced now, not the one at start.
            self._publish_presence(online=True)
        self._record(status)

    def _ack(self, item: _Document) -> None:
        if item.qos > 0:
            self.client.ack(item.mid, item.qos)

    def _recover(self, enforcer: Enforcer, error: Exception) -> PolicyStatus:
        """After a document set aside: the kernel back to the enforced state, and a refusal,
        so that a caller waiting for this node gets an answer."""
        # Whatever the handling changed before it raised is undone; if this fails, the worker's
        # own state is in doubt and it ends, for its supervisor to restart it.
        enforcer.reconcile()
        problem = Problem(
            f"not handled: {type(error).__name__} while handling the document; nothing "
            f"changed, the document is set aside on {self.dead_letters.topic}"
        )
        status = enforcer.refuse(problem)
        self._publish_status(status)
        return status

    def _record(self, status: PolicyStatus | None) -> None:
        """Metrics after a status (or at start): counters, latency, what is enforced now."""
        if self.enforcer is None:
            return
        rules, policies = self.enforcer.rules_enforced, len(self.enforcer.state.policies)
        if status is None:
            self.metrics.set_state(self.enforcer.state.version, rules=rules, policies=policies)
        else:
            self.metrics.record(status, rules=rules, policies=policies)

    def _shutdown(self, enforcer: Enforcer) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        if self.settings.remove_on_exit:
            enforcer.backend.remove_all()
            routing.remove_rules(self.settings)
            log.info("node %s: removed every rule it owned", self.settings.node)
        self._publish_presence(online=False)
        self.client.disconnect()
        self.client.loop_stop()
        self.metrics.close()
        log.info("node %s: stopped", self.settings.node)

    def stop(self) -> None:
        """Ask the main loop to finish (thread-safe)."""
        self.queue.put(Stop())

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("node %s: signal %d, stopping", self.settings.node, signum)
        self.stop()

    def _on_fatal(self, error: BaseException) -> None:
        self.queue.put(Fatal(error))

    def _on_usability(self, unusable: frozenset[int]) -> None:
        self.queue.put(Usability(unusable))

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: object,
        props: object,
    ) -> None:
        log.info("node %s: connected to broker (%s)", self.settings.node, reason)
        options = SubscribeOptions(qos=1, retainAsPublished=True)
        client.subscribe(self.topics.policy(self.settings.node), options=options)
        if self.enforcer is not None:
            self._publish_presence(online=True)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self.queue.put(_Document(bytes(msg.payload), msg.mid, msg.qos, bool(msg.retain)))

    def _publish_presence(self, *, online: bool) -> None:
        version = self.enforcer.state.version if self.enforcer is not None else None
        self._announced = version
        self._publish(
            self.presence.topic,
            self.presence.message(online=online, version=version),
            retain=True,
        )

    def _publish_status(self, status: PolicyStatus) -> None:
        self._publish(self.topics.status(self.settings.node), status)

    def _publish(self, topic: str, message: Envelope, *, retain: bool = False) -> None:
        self.client.publish(topic, encode(message), qos=1, retain=retain)
