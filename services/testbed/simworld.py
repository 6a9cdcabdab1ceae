"""The test bed without a kernel: the NSA core, two in-memory PREMs and a queue of inputs.

`--simulate` needs neither root nor a broker. What the real run gets from the bus arrives here
as calls on a fake clock: the monitor's metrics (every second, from the scenario's radio traces
where it has them, else steady values), link states, and the binding events a handover makes.
The NSA core's pure `step` decides on each, exactly as the service will; its messages go
straight to two `Enforcer`s on the memory back end (the PREM's own core, interpreting the
flow table like the kernel would) whose statuses are fed back with `acknowledge`. A link's
carrier loss reaches the MR's enforcer as an unusable BID, as its link watcher would report.

Modelled delays, from what the real test bed measures: binding events 0.1 s after a link
joins a network, the monitor's "up" 1.5 s after (three answered probes at 0.5 s).
"""

from __future__ import annotations

import heapq
import itertools
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

from services.contracts import policy_xml
from services.contracts.messages import (
    BindingEvent,
    BindingEventKind,
    LinkMetrics,
    LinkState,
    PolicyStatus,
)
from services.contracts.policy import PolicyMessage
from services.monitor.config import TraceConfig
from services.monitor.trace import TraceReplay
from services.nsa.core import (
    MrState,
    MrView,
    NsaConfig,
    Trigger,
    TriggerKind,
    acknowledge,
    apply_binding_event,
    apply_link_state,
    apply_metrics,
    new_ledgers,
    plan,
    step,
)
from services.nsa.core.explain import Explanation
from services.prem.backends.memory import MemoryBackend
from services.prem.config import PremSettings
from services.prem.core.flowtable import Packet
from services.prem.enforcer import Enforcer
from services.testbed import addressing as a

BINDING_DELAY_S = 0.1
LINK_UP_DELAY_S = 1.5
METRICS_PERIOD_S = 1.0
STREAM_CLIENT_PORT = 40000
Event = tuple[str, Any]


@dataclass
class Decided:
    """One NSA decision and the messages it sent, for printing."""

    at: float
    explanation: Explanation
    messages: tuple[PolicyMessage, ...]


def _enforcer(role: str, directory: Path) -> tuple[Enforcer, MemoryBackend]:
    node = a.HA_NODE if role == "ha" else a.MR_NODE
    bids: list[dict[str, Any]] = [
        {"bid": link.bid} if role == "ha" else {"bid": link.bid, "interface": link.interface}
        for link in a.MR_LINKS
    ]
    settings = PremSettings.model_validate(
        {
            "node": node,
            "role": role,
            "mobile_router": a.MOBILE_ROUTER,
            "backend": "memory",
            "bids": bids,
            "state_file": str(directory / f"{node}.json"),
        }
    )
    backend = MemoryBackend(settings)
    return Enforcer(settings, backend), backend


@dataclass
class World:
    """The simulated MR, its HA, the NSA, and the clock."""

    config: NsaConfig
    traces: dict[str, TraceConfig] = field(default_factory=dict)
    use_nsa: bool = True
    now: float = 0.0
    view: MrView = field(default_factory=lambda: MrView(mobile_router=a.MOBILE_ROUTER))
    decisions: list[Decided] = field(default_factory=list)
    log: list[tuple[float, str, Any]] = field(default_factory=list)
    up: dict[str, bool] = field(default_factory=lambda: {x.interface: True for x in a.MR_LINKS})
    carrier: dict[str, bool] = field(
        default_factory=lambda: {x.interface: True for x in a.MR_LINKS}
    )

    def __post_init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="multinet-simulate-")
        self.ha, self.ha_plane = _enforcer("ha", Path(self._dir.name))
        self.mr, self.mr_plane = _enforcer("mr", Path(self._dir.name))
        self.state = MrState(mobile_router=a.MOBILE_ROUTER)
        self.ledgers = new_ledgers(
            a.MOBILE_ROUTER,
            ha_node=a.HA_NODE,
            mr_node=a.MR_NODE,
            scheme=self.config.settings.scheme,
        )
        self._queue: list[tuple[float, int, str, Any]] = []
        self._order = itertools.count()
        self._replays = {
            name: TraceReplay(trace.load(), start=0.0, speed=trace.speed)
            for name, trace in self.traces.items()
        }
        self.care_of = {link.interface: a.care_of(link.router) for link in a.MR_LINKS}

    def close(self) -> None:
        """Remove the enforcers' state files."""
        self._dir.cleanup()

    # The queue ------------------------------------------------------------------------------

    def schedule(self, at: float, kind: str, payload: Any = None) -> None:
        """Put an input on the queue for time `at`."""
        heapq.heappush(self._queue, (at, next(self._order), kind, payload))

    def start(self) -> None:
        """Bindings registered and first metrics at t=0, a metrics round every second."""
        for link in a.MR_LINKS:
            self._binding(link.interface, BindingEventKind.REGISTERED)
        self._metrics_round()
        if self.use_nsa:
            self._decide(Trigger(kind=TriggerKind.START))

    def advance(self, until: float, stop: Callable[[], bool] | None = None) -> bool:
        """Process queued inputs up to `until`; True if `stop()` became true (and the clock
        stays at that moment), False when `until` was reached."""
        if stop is not None and stop():
            return True
        while self._queue and self._queue[0][0] <= until:
            at, _, kind, payload = heapq.heappop(self._queue)
            self.now = max(self.now, at)
            self._handle(kind, payload)
            if stop is not None and stop():
                return True
        self.now = max(self.now, until)
        return stop is not None and stop()

    def _handle(self, kind: str, payload: Any) -> None:
        if kind == "metrics":
            self._metrics_round()
        elif kind == "timer":
            self._decide(Trigger(kind=TriggerKind.TIMER))
        elif kind == "link":
            self.link_state(*payload)
        elif kind == "binding":
            self._binding(*payload)

    # Inputs -----------------------------------------------------------------------------------

    def _metrics_round(self) -> None:
        for link in a.MR_LINKS:
            if not self.up[link.interface]:
                continue
            replay = self._replays.get(link.interface)
            sample = replay.at(self.now) if replay is not None else None
            metrics = LinkMetrics(
                sender=a.MR_NODE,
                interface=link.interface,
                bid=link.bid,
                technology=link.technology,
                rtt_ms=1.0 + ((sample.rtt_ms or 0.0) if sample else 0.0),
                jitter_ms=0.2,
                loss=(sample.loss or 0.0) if sample else 0.0,
                signal_dbm=sample.signal_dbm if sample else None,
                bitrate_bps=sample.bitrate_bps if sample else None,
                cost_per_mb=0.0 if link.technology == "wlan" else 0.02,
            )
            self.log.append((self.now, "metrics", metrics))
            if self.use_nsa:
                self.view, trigger = apply_metrics(self.view, metrics, self.now)
                self._decide(trigger)
        self.schedule(self.now + METRICS_PERIOD_S, "metrics")

    def link_state(self, interface: str, up: bool) -> None:
        """The monitor reports the link up or down (to the NSA)."""
        self.up[interface] = up
        link = a.mr_link(interface)
        state = LinkState(sender=a.MR_NODE, interface=interface, bid=link.bid, up=up, carrier=up)
        self.log.append((self.now, "link-state", state))
        if self.use_nsa:
            self.view, trigger = apply_link_state(self.view, state, self.now)
            self._decide(trigger)

    def set_carrier(self, interface: str, up: bool) -> None:
        """The device gains or loses carrier: the MR's PREM sees it at once (its link
        watcher), the monitor says down at once but up only after its probes answer."""
        self.carrier[interface] = up
        unusable = frozenset(x.bid for x in a.MR_LINKS if not self.carrier[x.interface])
        status = self.mr.handle_unusable(unusable)
        if status is not None:
            self.log.append((self.now, "status", status))
        if up:
            self.schedule(self.now + LINK_UP_DELAY_S, "link", (interface, True))
        else:
            self.link_state(interface, False)

    def _binding(self, interface: str, kind: BindingEventKind) -> None:
        link = a.mr_link(interface)
        event = BindingEvent(
            sender=a.HA_NODE,
            event=kind,
            mobile_router=a.MOBILE_ROUTER,
            bid=link.bid,
            care_of_address=self.care_of[interface],
        )
        self.log.append((self.now, "binding", event))
        if self.use_nsa:
            self.view, trigger = apply_binding_event(self.view, event, self.now)
            self._decide(trigger)

    def configure(self, config: NsaConfig) -> None:
        """New rules or preferences reached the NSA."""
        self.config = config
        if self.use_nsa:
            self._decide(Trigger(kind=TriggerKind.CONFIG))

    # Link changes the scenario makes -----------------------------------------------------------

    def detach(self, interface: str) -> None:
        """Carrier lost at once; the binding stays until the next BU."""
        self.set_carrier(interface, False)

    def attach(self, interface: str, router: str) -> None:
        """A new care-of address: BU (handover-started) and BA (coa-changed), then up."""
        self.care_of[interface] = a.care_of(router)
        at = self.now + BINDING_DELAY_S
        self.schedule(at, "binding", (interface, BindingEventKind.HANDOVER_STARTED))
        self.schedule(at + 0.001, "binding", (interface, BindingEventKind.COA_CHANGED))
        self.set_carrier(interface, True)

    def change_care_of(self, interface: str, address: IPv6Address) -> None:
        """Same link, new address: a BU and its BA."""
        self.care_of[interface] = str(address)
        at = self.now + BINDING_DELAY_S
        self.schedule(at, "binding", (interface, BindingEventKind.HANDOVER_STARTED))
        self.schedule(at + 0.001, "binding", (interface, BindingEventKind.COA_CHANGED))

    # Deciding and enforcing -----------------------------------------------------------------

    def _decide(self, trigger: Trigger) -> None:
        """One NSA step; its messages delivered and acknowledged, and the follow-ups the
        acknowledgements allow (one message per node is in flight at a time)."""
        result = step(
            self.view, self.config, self.state, self.ledgers, now=self.now, trigger=trigger
        )
        self.state, self.ledgers = result.state, result.ledgers
        pending, sent = list(result.messages), []
        while pending:
            for message in pending:
                sent.append(message)
                self.ledgers = acknowledge(self.ledgers, self.deliver(message))
            self.ledgers, more = plan(self.ledgers, self.config, self.state)
            pending = list(more)
        self.decisions.append(Decided(self.now, result.decision.explanation, tuple(sent)))
        if result.decision.wake_at is not None:
            self.schedule(result.decision.wake_at, "timer")

    def deliver(self, message: PolicyMessage) -> PolicyStatus:
        """Hand one document to its node's enforcer (through the XML codec, as on the wire)."""
        enforcer = self.ha if message.node == a.HA_NODE else self.mr
        status = enforcer.handle_document(policy_xml.render(message))
        self.log.append((self.now, "status", status))
        return status

    def bid_of_stream(self, port: int) -> tuple[int, int]:
        """(downlink BID at the HA, uplink BID at the MR) of the stream; BID 1 is the default
        path that unmarked packets take."""
        down = Packet(IPv6Address(a.CN), IPv6Address(a.MNN), 6, port, STREAM_CLIENT_PORT)
        up = Packet(IPv6Address(a.MNN), IPv6Address(a.CN), 6, STREAM_CLIENT_PORT, port)
        default = a.MR_LINKS[0].bid
        at_ha, at_mr = self.ha_plane.bid_for(down), self.mr_plane.bid_for(up)
        return (
            at_ha if isinstance(at_ha, int) else default,
            at_mr if isinstance(at_mr, int) else default,
        )
