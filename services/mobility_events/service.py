"""The mobility-events process: Mobility Header capture in, binding events on the bus out.

Threads: the capture thread only decodes and queues (bounded queue; a full queue drops the
message and counts it); paho's thread talks to the broker; the main thread owns the
`BindingView`, feeds it each message and a `tick` every `tick_interval_s`, and publishes every
returned event with QoS 1 on `Topics.binding_event(mr, bid)`.

A packet the decoder fails on (other than as malformed), or a message whose observation
raises, is set aside on the node's dead-letter topic (`services.deadletter`) and the service
goes on: signalling from the network must never end it.

`run` is what `multinet mobility-events` calls (services/mobility_events/cli.py, which also
loads and checks the settings).
"""

from __future__ import annotations

import logging
import queue
import time
from dataclasses import dataclass
from ipaddress import IPv6Address

from services import netns
from services.contracts.messages import BindingEvent, encode
from services.contracts.settings import BrokerSettings
from services.contracts.topics import Topics
from services.mobility_events.bindings import BindingView
from services.mobility_events.capture import MhCapture
from services.mobility_events.config import MobilityEventsSettings
from services.mobility_events.metrics import MobilityEventsMetrics
from services.mobility_header.codec import Message
from services.mobility_header.errors import MobilityHeaderError, Reason
from services.runtime import ServiceBus, on_signals

log = logging.getLogger(__name__)
SERVICE = "mobility-events"


@dataclass(frozen=True, slots=True)
class _Observed:
    now: float
    src: IPv6Address
    dst: IPv6Address
    message: Message


@dataclass(frozen=True, slots=True)
class _Fatal:
    error: BaseException


class _Stop:
    pass


_Item = _Observed | _Fatal | _Stop


class MobilityEventsService:
    """Owns the MQTT session, the capture thread and the binding view of one node."""

    def __init__(
        self,
        settings: MobilityEventsSettings,
        broker: BrokerSettings,
        *,
        netns_name: str | None = None,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.netns_name = netns_name
        self.topics = Topics(broker.topic_root)
        self.view = BindingView(
            settings.node,
            settings.identity(),
            handover_started_on_new_coa=settings.handover_started_on_new_coa,
            pending_timeout_s=settings.pending_timeout_s,
            default_bid=settings.default_bid,
        )
        self.queue: queue.Queue[_Item] = queue.Queue(settings.queue_size)
        self.dropped = 0
        self.published = 0
        self.capture: MhCapture | None = None
        self.metrics = MobilityEventsMetrics(settings.node, tuple(r.value for r in Reason))
        self.bus = ServiceBus(
            service=SERVICE, node=settings.node, broker=broker, metrics=self.metrics
        )
        self.client = self.bus.client
        self.dead_letters = self.bus.dead_letters

    def run(self) -> None:
        """Connect, enter the namespace, capture and publish until `stop()`."""
        # The bus connection stays in the namespace we started in (management side); the
        # capture sockets are opened after `enter`, in the observed node's namespace. The
        # metrics endpoint stays on the management side too.
        self.bus.start(self.settings.metrics_listen)
        if self.netns_name is not None:
            netns.enter(self.netns_name)
        self.capture = MhCapture(
            self._on_message,
            outgoing=self.settings.capture_outgoing,
            on_error=self._on_fatal,
            on_malformed=self._on_malformed,
            on_undecodable=self._on_undecodable,
            name=f"{SERVICE}-capture",
            node=self.settings.node,
        )
        self.capture.start()
        self.bus.online()
        log.info(
            "node %s: observing Mobility Headers%s for %d mobile router(s)",
            self.settings.node,
            " (incoming and outgoing)" if self.settings.capture_outgoing else " (incoming)",
            len(self.settings.mobile_routers),
        )
        try:
            self._serve()
        finally:
            self._shutdown()

    def stop(self) -> None:
        """Ask the main loop to finish (thread-safe, signal-safe)."""
        try:
            self.queue.put_nowait(_Stop())
        except queue.Full:
            # The loop is behind; it sees the stop after the queued messages.
            self.queue.put(_Stop())

    def _serve(self) -> None:
        interval = self.settings.tick_interval_s
        next_tick = time.monotonic() + interval
        while True:
            try:
                item: _Item | None = self.queue.get(timeout=max(0.0, next_tick - time.monotonic()))
            except queue.Empty:
                item = None
            if isinstance(item, _Stop):
                return
            if isinstance(item, _Fatal):
                raise RuntimeError(
                    "Mobility Header capture failed; exiting so the supervisor restarts us"
                ) from item.error
            if item is not None:
                self._observe(item)
            mono = time.monotonic()
            if mono >= next_tick:
                self._publish_events(self.view.tick(time.time()))
                next_tick = max(next_tick + interval, mono)

    def _observe(self, item: _Observed) -> None:
        """Feed one message to the view; if that raises, the message becomes a dead letter."""
        try:
            events = self.view.observe(item.now, item.src, item.dst, item.message)
        except Exception as exc:
            self.dead_letters.post(
                source=f"mobility header from {item.src} to {item.dst}",
                input_kind="mobility-message",
                payload=repr(item.message).encode(),
                error=exc,
            )
            return
        self._publish_events(events)

    def _shutdown(self) -> None:
        if self.capture is not None:
            self.capture.stop()
        self.bus.close()
        log.info(
            "node %s: stopped (%d events published, %d messages dropped, view %s)",
            self.settings.node,
            self.published,
            self.dropped,
            self.view.stats,
        )

    def _on_message(self, now: float, src: IPv6Address, dst: IPv6Address, msg: Message) -> None:
        try:
            self.queue.put_nowait(_Observed(now, src, dst, msg))
        except queue.Full:
            self.dropped += 1
            self.metrics.dropped.inc()
            log.warning("node %s: event queue full, dropped a message from %s", self._node, src)

    def _on_fatal(self, error: BaseException) -> None:
        self.queue.put(_Fatal(error))

    def _on_malformed(self, error: MobilityHeaderError) -> None:
        self.metrics.decode_errors.labels(error.reason.value).inc()

    def _on_undecodable(self, data: bytes, src: IPv6Address, error: Exception) -> None:
        # Runs in the capture thread; publishing, counting and logging are thread-safe.
        self.dead_letters.post(
            source=f"mobility header from {src}",
            input_kind="mobility-header",
            payload=data,
            error=error,
        )

    def _publish_events(self, events: list[BindingEvent]) -> None:
        for event in events:
            topic = self.topics.binding_event(event.mobile_router, event.bid)
            self.client.publish(topic, encode(event), qos=1)
            self.published += 1
            self.metrics.events.labels(event.event.value).inc()
            log.info(
                "node %s: %s %s BID %d CoA %s%s",
                self._node,
                event.event.value,
                event.mobile_router,
                event.bid,
                event.care_of_address,
                f" ({event.status_name})" if event.status_name else "",
            )

    @property
    def _node(self) -> str:
        return self.settings.node


def run(
    settings: MobilityEventsSettings, broker: BrokerSettings, netns_name: str | None = None
) -> None:
    """Serve until SIGTERM or SIGINT; capture in `netns_name` when given, bus where we are."""
    service = MobilityEventsService(settings, broker, netns_name=netns_name)
    on_signals(settings.node, service.stop)
    service.run()
