"""The home agent side: receive BUs, answer BAs, keep one pipe per accepted BID.

One thread, one poll loop: a raw MH socket bound to the HA address and a stop pipe. Each BU
goes through the pure `cache.decide`; when the cache changes, the kernel is reconciled to
the pipes of the bindings (`pipe_kinds.ha_state`, applied by `kernel.apply_state`:
idempotent, verified) before the BA leaves, so an accepted BA means the pipe exists. The HA
offers the pipe kinds its setting allows and its kernel has; a BU asking for another kind,
or from a care-of address the HA cannot route to, is refused with 143 (forwarding setup
failed) and the old binding stays. Bindings run out on their own clock (`expire`), and the
routes go with them (a binding that ran out is dropped before the next BU is judged,
so that BU registers anew). On stop every route and rule this agent owns is removed.

With `publish_events`, each cache change also becomes a `BindingEvent` (derived purely in
`services.mcoa.events`), handed to an `EventSink` after the BA left; `BusPublisher` is the sink
that publishes them with QoS 1 on the same topics as the mobility-events service, through the
shared service runtime.

What it does is counted in `McoaHaMetrics` (BUs, BAs by status, expiries, bindings, pipes);
`agent.run` serves them when `metrics_listen` is set.
"""

from __future__ import annotations

import logging
import select
import socket
import time
from collections.abc import Callable, Sequence
from ipaddress import IPv6Address
from typing import Any

from pyroute2 import IPRoute

from services.contracts.errors import KernelError
from services.contracts.messages import BindingEvent
from services.contracts.settings import BrokerSettings
from services.mcoa import events, kernel, mhsocket, pipe_kinds, pipes
from services.mcoa.cache import (
    Binding,
    BindingKey,
    Decision,
    decide,
    desired_pipes,
    expire,
    make_ack,
)
from services.mcoa.cache import next_expiry as cache_next_expiry
from services.mcoa.config import HaSettings, McoaSettings
from services.mcoa.metrics import McoaHaMetrics
from services.metrics import ServiceMetrics
from services.mobility_header import pipe_option
from services.mobility_header.codec import BindingUpdate, decode
from services.mobility_header.errors import MobilityHeaderError
from services.mobility_header.status import BaStatus, ba_status_name
from services.runtime import ServiceBus
from services.wakeup import Stopper

log = logging.getLogger(__name__)

_RESYNC_SECONDS = 5.0
_IFF_UP = 0x1
_LOOPBACK_INDEX = 1
_IFF_LOOPBACK = 0x8
SERVICE = "mcoa-ha"

#: Takes the events of one step, in order (the agent's thread calls it; it must not block).
EventSink = Callable[[Sequence[BindingEvent]], None]


class BusPublisher:
    """The HA's own binding events on the bus: QoS 1 on `Topics.binding_event(mr, bid)`.

    The shared runtime (`services.runtime.ServiceBus`) holds the connection: presence
    (retained) says online after `start` and offline on `close`, the broker sends the offline
    last will when the agent dies, and `metrics` (the agent's) export the connection state.
    `start` connects from the calling thread's namespace and paho's thread stays there: call it
    before `netns.enter` (as the PREM worker), so the bus is reached from the management side.
    """

    def __init__(self, node: str, broker: BrokerSettings, metrics: ServiceMetrics) -> None:
        self.node = node
        self.published = 0
        self.bus = ServiceBus(service=SERVICE, node=node, broker=broker, metrics=metrics)
        self.topics = self.bus.topics
        self.client = self.bus.client

    def start(self) -> None:
        """Connect (waits a while for the broker, then paho keeps retrying) and say hello.

        The metrics endpoint is the agent's to open (both roles have one, opened first)."""
        self.bus.start(None)
        self.bus.online()

    def __call__(self, batch: Sequence[BindingEvent]) -> None:
        for event in batch:
            self.published += 1
            numbered = event.model_copy(update={"sequence": self.published})
            topic = self.topics.binding_event(event.mobile_router, event.bid)
            self.bus.publish(topic, numbered, qos=1)
            log.info(
                "HA: event %s %s BID %d CoA %s%s",
                event.event.value,
                event.mobile_router,
                event.bid,
                event.care_of_address,
                f" ({event.status_name})" if event.status else "",
            )

    def close(self) -> None:
        """Say offline, then disconnect (queued QoS 1 events go out first when connected) and
        close the metrics endpoint."""
        self.bus.close()
        log.info("HA: bus publisher stopped (%d events published)", self.published)


class HaAgent:
    """Runs the home agent in the calling thread until `stopper` is set.

    `offered` are the pipe kinds it builds (in order of preference), found by the caller
    from the setting and the kernel (`capabilities.offered_pipe_kinds`)."""

    def __init__(
        self,
        settings: McoaSettings,
        *,
        offered: tuple[str, ...],
        clock: Callable[[], float] = time.monotonic,
        events: EventSink | None = None,
        wall_clock: Callable[[], float] = time.time,
        metrics: McoaHaMetrics | None = None,
    ) -> None:
        if settings.ha is None:
            raise ValueError("HaAgent needs settings with role ha")
        self._settings = settings
        self._ha: HaSettings = settings.ha
        self.offered = offered
        self._clock = clock
        self._events = events
        self._wall_clock = wall_clock
        self._ids = self._ha.mr_ids()
        self.metrics = McoaHaMetrics(settings.node) if metrics is None else metrics
        self.cache: dict[BindingKey, Binding] = {}
        #: The kernel state last applied and verified (None: unknown, check everything).
        self._applied: pipe_kinds.KernelState | None = None

    @property
    def _priorities(self) -> set[int]:
        return {self._settings.decap_rule_priority}

    def _emit(self, batch: Sequence[BindingEvent]) -> None:
        if self._events is None or not batch:
            return
        try:
            self._events(batch)
        except Exception:  # a bus problem must not take the home agent down
            log.exception("HA: could not hand over %d binding event(s)", len(batch))

    def _endpoint_dev(self, ipr: Any) -> str:
        """The device for the End.DT6 route of the HA address (SRv6 only).

        The kernel turns a route via loopback into a reject route, so when the HA address sits
        on `lo` (the usual place) the first non-loopback device that is up carries the route;
        End.DT6 with a table ignores the device otherwise.
        """
        if pipe_kinds.SEG6 not in self.offered:
            return ""
        names = pipes.device_names(ipr)
        for msg in ipr.get_addr(family=socket.AF_INET6):
            index = int(msg["index"])
            if (
                IPv6Address(msg.get_attr("IFA_ADDRESS")) == self._ha.ha_address
                and index != _LOOPBACK_INDEX
            ):
                return names[index]
        for msg in sorted(ipr.get_links(), key=lambda m: int(m["index"])):
            if int(msg["flags"]) & _IFF_UP and not int(msg["flags"]) & _IFF_LOOPBACK:
                return str(msg.get_attr("IFLA_IFNAME"))
        raise KernelError("decap route", "no non-loopback device is up")

    def _desired(
        self, ipr: Any, cache: dict[BindingKey, Binding], *, strict: bool
    ) -> pipe_kinds.KernelState | None:
        """The kernel state for `cache`; an unreachable care-of address gives None if
        `strict`, else its pipe is left out until a later resync finds a way there."""
        s = self._settings
        wanted = desired_pipes(cache, s.table_base)
        names = pipes.device_names(ipr) if wanted else {}
        towards = {p.care_of: pipes.dev_towards(ipr, p.care_of, names) for p in wanted}
        unreachable = sorted(c for c, dev in towards.items() if dev is None)
        if unreachable and strict:
            return None
        for care_of in unreachable:
            log.warning("HA: no route to care-of address %s, pipe left out", care_of)
        reachable = [p for p in wanted if towards[p.care_of] is not None]
        return pipe_kinds.ha_state(s, self.offered, self._endpoint_dev(ipr), reachable, towards)

    def _apply(
        self,
        ipr: Any,
        cache: dict[BindingKey, Binding],
        *,
        strict: bool = False,
        full: bool = False,
    ) -> bool:
        """Reconcile the kernel to `cache` (`full`: every part checked again, not only what
        differs from the last applied state); False (nothing changed) if `strict` and a
        care-of address is unreachable."""
        wanted = self._desired(ipr, cache, strict=strict)
        if wanted is None:
            return False
        known, self._applied = (None if full else self._applied), None
        kernel.apply_state(ipr, wanted, self._priorities, known)
        self._applied = wanted
        self.metrics.pipes.set(wanted.pipes)
        return True

    def _keep(self, cache: dict[BindingKey, Binding]) -> None:
        self.cache = cache
        self.metrics.set_bindings({"registered": len(cache)})

    def _setup(self, ipr: Any) -> None:
        if pipe_kinds.uses_decap_rule(self.offered):
            pipes.move_local_rule(ipr, self._settings.local_rule_priority)
        self._apply(ipr, self.cache)

    def teardown(self, ipr: Any) -> None:
        """Remove every device, route and rule this agent owns (the local rule stays moved)."""
        kernel.remove_all(ipr, self._priorities)
        self.metrics.pipes.set(0)

    def _handle(self, ipr: Any, bu: BindingUpdate, source: IPv6Address, now: float) -> Decision:
        decision = decide(self._ha, self.cache, bu, source, now, offered=self.offered)
        if decision.status == BaStatus.FORWARDING_SETUP_FAILED and decision.ack is not None:
            asked = pipe_option.kind_of(bu.options)
            if pipe_option.offered_in(decision.ack.options) is not None:
                log.warning(
                    "HA: BU from %s asks for pipe kind %s, this home agent offers %s: refused",
                    source,
                    asked or f"{pipe_kinds.IP6TNL} (no pipe-kind option: a plain NEMO router)",
                    ", ".join(self.offered),
                )
        if decision.status == BaStatus.ACCEPTED and decision.cache != self.cache:
            try:
                ok = self._apply(ipr, decision.cache, strict=True)
            except KernelError:
                log.exception("HA: forwarding setup failed, keeping the old bindings")
                ok = False
            if not ok:
                self._apply(ipr, self.cache)
                failed = BaStatus.FORWARDING_SETUP_FAILED
                bids = bu.binding_ids
                ack = make_ack(bu, failed, 0, bids[0].bid if bids else None)
                return Decision(failed, ack, dict(self.cache), decision.home)
        self._keep(decision.cache)
        return decision

    def _receive(self, ipr: Any, sock: socket.socket) -> None:
        while (got := mhsocket.receive(sock)) is not None:
            data, source = got
            try:
                message = decode(data)
            except MobilityHeaderError as exc:
                log.warning("HA: undecodable Mobility Header from %s: %s", source, exc)
                continue
            if not isinstance(message, BindingUpdate):
                continue
            self.metrics.updates_received.inc()
            started = self._clock()
            # A binding that ran out is gone before the BU is judged (a new BU registers anew).
            self._expire(ipr, started)
            before = self.cache
            decision = self._handle(ipr, message, source, started)
            bids = [b.bid for b in message.binding_ids]
            log.info(
                "HA: BU seq %d from %s (home %s, BIDs %s, lifetime %d s): %d %s in %.1f ms",
                message.sequence,
                source,
                decision.home,
                bids,
                message.lifetime_seconds,
                decision.status,
                ba_status_name(decision.status),
                (self._clock() - started) * 1000,
            )
            if decision.ack is not None:
                mhsocket.send(sock, decision.ack, source)
                self.metrics.acks_sent.labels(str(int(decision.ack.status))).inc()
                self.metrics.handling_seconds.observe(self._clock() - started)
            if self._events is not None:
                self._emit(
                    events.decision_events(
                        self._settings.node,
                        self._ids,
                        before,
                        decision,
                        bu=message,
                        source=source,
                        now=self._wall_clock(),
                    )
                )

    def _expire(self, ipr: Any, now: float) -> None:
        kept, gone = expire(self.cache, now)
        if not gone:
            return
        for b in gone:
            log.info("HA: binding of %s BID %d (CoA %s) expired", b.home, b.bid, b.care_of)
        self._apply(ipr, kept)
        self._keep(kept)
        self.metrics.expiries.inc(len(gone))
        if self._events is not None:
            self._emit(
                events.expired_events(self._settings.node, self._ids, gone, self._wall_clock())
            )

    def run(self, stopper: Stopper) -> None:
        """Serve until stopped; kernel errors and unexpected exceptions end the agent loudly."""
        ipr = IPRoute()
        sock = mhsocket.open_mh(self._ha.ha_address)
        try:
            self._setup(ipr)
            log.info(
                "HA: serving on %s (pipe kinds offered: %s)",
                self._ha.ha_address,
                ", ".join(self.offered),
            )
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLIN)
            poller.register(stopper.fileno(), select.POLLIN)
            resync_at = self._clock() + _RESYNC_SECONDS
            while not stopper.stopped:
                now = self._clock()
                wake = min(t for t in (cache_next_expiry(self.cache), resync_at) if t is not None)
                ready = {fd for fd, _ in poller.poll(max(0.0, wake - now) * 1000)}
                if stopper.stopped:
                    break
                if sock.fileno() in ready:
                    self._receive(ipr, sock)
                now = self._clock()
                self._expire(ipr, now)
                if now >= resync_at:
                    # An admin down deletes routes through the device: put them back.
                    self._apply(ipr, self.cache, full=True)
                    resync_at = now + _RESYNC_SECONDS
        finally:
            try:
                self.teardown(ipr)
            finally:
                sock.close()
                ipr.close()
