"""Everything the monitor knows about one link, and the messages it owes the bus: pure.

`LinkTracker` takes the link's inputs (interface state from netlink, probe sends, answers and
timeouts, interface counters, radio readings or trace samples), each with the time it happened,
and returns the `LinkState` / `LinkMetrics` messages to publish. It never touches a socket, so
the event loop that feeds it stays a thin shell and tests step a fake clock.

Combining a radio trace with probes: a trace stands for the radio segment this machine cannot
emulate, so its RTT adds to the probe's (the wired path the probe really measured) and its loss
combines with the probe's as independent losses, `1 - (1 - a)(1 - b)`.

Brownouts (`brownout`): a link with thresholds reports its metrics at once when a brownout
begins or ends, not at the next period. While it lasts, the report's RTT is the larger of the
EWMA and the newest probe's RTT, and its loss the larger of the window's and the short
window's: the EWMA alone would show a delay step only after seconds, and the NSA compares the
report with the classes' bounds.

Budgets (`budget`): a budgeted link's counters also count into its `BudgetMeter`, given the
wall-clock time (billing periods are calendar periods); each report carries the used volume,
the budget and the period's end, and every report carries the probes' bytes per hour.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from services.contracts.messages import Envelope, LinkMetrics, LinkState
from services.monitor.brownout import BrownoutDetector, BrownoutEvent, BrownoutSettings
from services.monitor.budget import BudgetMeter
from services.monitor.change import ChangeDetector, ChangeSettings
from services.monitor.config import LinkConfig
from services.monitor.counters import Counters, packet_rates, rates
from services.monitor.netlink import InterfaceState
from services.monitor.radio import RadioReading
from services.monitor.state import LinkStateMachine, LinkStateSettings, Transition
from services.monitor.stats import ProbeSettings, ProbeWindow
from services.monitor.trace import TraceSample

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Radio:
    """The radio values in force, from nl80211 or a trace."""

    signal_dbm: float | None = None
    noise_dbm: float | None = None
    bitrate_bps: float | None = None
    rtt_ms: float | None = None  # traces only
    loss: float | None = None  # traces only

    @classmethod
    def from_reading(cls, reading: RadioReading) -> Radio:
        """Values read from the interface's driver."""
        return cls(reading.signal_dbm, reading.noise_dbm, reading.bitrate_bps)

    @classmethod
    def from_sample(cls, sample: TraceSample) -> Radio:
        """Values replayed from a trace."""
        return cls(
            sample.signal_dbm, sample.noise_dbm, sample.bitrate_bps, sample.rtt_ms, sample.loss
        )


def _usable(state: InterfaceState) -> bool:
    return state.exists and state.admin_up and state.carrier


def _why_unusable(state: InterfaceState) -> str:
    if not state.exists:
        return "interface vanished"
    if not state.admin_up:
        return "interface set down"
    return "carrier lost"


def _add(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else a + b


def _larger(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else max(a, b)


def _combined_loss(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else 1.0 - (1.0 - a) * (1.0 - b)


class LinkTracker:
    """The state of one monitored link; every method returns the messages to publish."""

    def __init__(
        self,
        node: str,
        link: LinkConfig,
        *,
        window: ProbeSettings,
        state: LinkStateSettings,
        publish: ChangeSettings,
        initial: InterfaceState,
        now: float,
        assume_up: bool = True,
        brownout: BrownoutSettings | None = None,
        budget: BudgetMeter | None = None,
        probe_bytes_per_hour: float | None = None,
    ) -> None:
        self.node = node
        self.link = link
        self.window = ProbeWindow(window)
        carrier = _usable(initial)
        self.machine = LinkStateMachine(state, up=assume_up and carrier, carrier=carrier)
        self.change = ChangeDetector(publish)
        self.interface = initial
        self.radio = Radio()
        self.rx_bps: float | None = None
        self.tx_bps: float | None = None
        self.rx_pps: float | None = None
        self.tx_pps: float | None = None
        self._counters: Counters | None = None
        self._sequence = 0
        self._started = now
        self.state_messages = 0
        self.metric_messages = 0
        self.detector: BrownoutDetector | None = None
        if link.probe is not None and link.watches_brownout:
            self.detector = BrownoutDetector(link.brownout_delay_ms, link.brownout_loss, brownout)
        self.budget = budget
        self.probe_bytes_per_hour = probe_bytes_per_hour
        self.brownouts: list[tuple[float, BrownoutEvent]] = []  # the last few, for the log

    @property
    def up(self) -> bool:
        """Whether the link is declared able to carry traffic."""
        if self.link.probe is None:
            return self.machine.carrier
        return self.machine.up

    def start(self, now: float, reason: str = "monitor started") -> list[Envelope]:
        """The current state as a message (retained on the bus, so a late subscriber finds it)."""
        return [self._state(now, reason)]

    # --- inputs -------------------------------------------------------------------------

    def interface_changed(self, state: InterfaceState, now: float) -> list[Envelope]:
        """A netlink event: carrier, admin state, existence or addresses changed."""
        before = self.interface
        self.interface = state
        was_up = self.up
        usable = _usable(state)
        self.machine.carrier_changed(usable, now)
        if not usable:
            self._counters = None  # the next counters may come from a re-created device
        if self.up != was_up:
            reason = "carrier back" if self.up else _why_unusable(state)
            return [self._state(now, reason)]
        reasons = []
        if state.exists != before.exists:  # a deletion comes after an admin down
            reasons.append("interface vanished" if not state.exists else "interface re-created")
        elif _usable(before) != usable:
            reasons.append("carrier back, waiting for probes" if usable else _why_unusable(state))
        if state.addresses != before.addresses:
            reasons.append(_address_change(before.addresses, state.addresses))
        return [self._state(now, "; ".join(reasons))] if reasons else []

    def probe_sent(self, seq: int, now: float) -> None:
        """A probe left (or was attempted: an unsent probe is simply never answered)."""
        self.window.sent(seq, now)

    def answered(self, seqs: list[int], now: float) -> list[Envelope]:
        """Answers arrived for these probes."""
        out: list[Envelope] = []
        edge = False
        for seq in seqs:
            rtt = self.window.answered(seq, now)
            if rtt is not None:
                out.extend(self._transition(self.machine.probe(ok=True, now=now), now))
                if self.detector is not None:
                    edge |= self._brownout(self.detector.answered(rtt * 1000.0), now)
        return out + self._metrics_now(now, edge)

    def expire(self, now: float, timeout_s: float) -> list[Envelope]:
        """Count every probe older than `timeout_s` as lost."""
        lost = self.window.timed_out(now, timeout_s)
        if not lost:
            return []
        out: list[Envelope] = []
        edge = False
        for _ in lost:
            out.extend(self._transition(self.machine.probe(ok=False, now=now), now))
            if self.detector is not None:
                edge |= self._brownout(self.detector.lost(), now)
        return out + self._metrics_now(now, edge)

    def _brownout(self, event: BrownoutEvent | None, now: float) -> bool:
        if event is None:
            return False
        self.brownouts = [*self.brownouts[-7:], (now, event)]
        log.info(
            "node %s: link %s brownout %s: %s",
            self.node,
            self.link.interface,
            event.edge.value,
            event.reason,
        )
        return True

    @property
    def in_brownout(self) -> bool:
        """Whether the link is in a brownout now."""
        return self.detector is not None and self.detector.active

    def counters(self, counters: Counters | None, wall: float | None = None) -> None:
        """New interface counters: update the bit rates (None: the device is gone) and, for a
        budgeted link, the used volume (`wall`: the unix time of the reading)."""
        previous, self._counters = self._counters, counters
        if counters is not None and self.budget is not None and wall is not None:
            self.budget.count(counters, wall)
        if counters is None:
            self.rx_bps = self.tx_bps = self.rx_pps = self.tx_pps = None
            return
        if previous is None:
            return
        measured = rates(previous, counters)
        if measured is not None:
            self.rx_bps, self.tx_bps = measured.rx_bps, measured.tx_bps
        packets = packet_rates(previous, counters)
        if packets is not None:
            self.rx_pps, self.tx_pps = packets.rx_pps, packets.tx_pps

    def radio_changed(self, radio: Radio, now: float) -> list[Envelope]:
        """New radio values (a trace sample takes effect, or a driver reading)."""
        self.radio = radio
        return self._metrics_if_material(now)

    def tick(self, now: float) -> list[Envelope]:
        """The periodic publication, when it is due."""
        loss, rtt, jitter = self._quality()
        if self.change.due(now):
            return [self._metrics(now, loss, rtt, jitter)]
        return []

    # --- outputs ------------------------------------------------------------------------

    def _quality(self) -> tuple[float | None, float | None, float | None]:
        stats = self.window.snapshot()
        probe_loss, probe_rtt = stats.loss, stats.rtt_ewma_ms
        detector = self.detector
        if detector is not None and detector.active:
            probe_loss = _larger(probe_loss, detector.loss)
            probe_rtt = _larger(probe_rtt, detector.last_rtt_ms)
        loss = _combined_loss(probe_loss, self.radio.loss)
        rtt = _add(probe_rtt, self.radio.rtt_ms)
        return loss, rtt, stats.jitter_ms

    def _metrics_now(self, now: float, edge: bool) -> list[Envelope]:
        """The metrics at once after a brownout edge, else if material."""
        if not edge:
            return self._metrics_if_material(now)
        loss, rtt, jitter = self._quality()
        return [self._metrics(now, loss, rtt, jitter)]

    def _metrics_if_material(self, now: float) -> list[Envelope]:
        loss, rtt, jitter = self._quality()
        if self.change.should_publish(now, loss, rtt, jitter) is None:
            return []
        return [self._metrics(now, loss, rtt, jitter)]

    def _metrics(
        self, now: float, loss: float | None, rtt: float | None, jitter: float | None
    ) -> LinkMetrics:
        self.change.published(now, loss, rtt, jitter)
        self.metric_messages += 1
        return LinkMetrics(
            sender=self.node,
            sequence=self._next(),
            interface=self.link.interface,
            bid=self.link.bid,
            technology=self.link.technology,
            rtt_ms=rtt,
            jitter_ms=jitter,
            loss=loss,
            rx_bps=self.rx_bps,
            tx_bps=self.tx_bps,
            rx_pps=self.rx_pps,
            tx_pps=self.tx_pps,
            signal_dbm=self.radio.signal_dbm,
            noise_dbm=self.radio.noise_dbm,
            bitrate_bps=self.radio.bitrate_bps,
            cost_per_mb=self.link.cost_per_mb,
            probe_bytes_per_hour=self.probe_bytes_per_hour,
            budget_bytes=None if self.budget is None else self.budget.budget_bytes,
            budget_used_bytes=None if self.budget is None else self.budget.used_bytes,
            budget_period_end=None if self.budget is None else self.budget.period_end,
        )

    def _transition(self, transition: Transition | None, now: float) -> list[Envelope]:
        if transition is None or self.link.probe is None:
            return []
        return [self._state(now, transition.reason)]

    def _state(self, now: float, reason: str) -> LinkState:
        self.state_messages += 1
        return LinkState(
            sender=self.node,
            sequence=self._next(),
            interface=self.link.interface,
            bid=self.link.bid,
            up=self.up,
            carrier=self.machine.carrier,
            addresses=self.interface.addresses,
            reason=reason,
        )

    def _next(self) -> int:
        self._sequence += 1
        return self._sequence


def _address_change(before: tuple[str, ...], after: tuple[str, ...]) -> str:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    parts = [f"address {a} added" for a in added] + [f"address {r} removed" for r in removed]
    return ", ".join(parts)
