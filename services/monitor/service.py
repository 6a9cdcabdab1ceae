"""The monitor process: one event loop that watches every link of a node and publishes.

One thread does all the work: it polls the netlink event socket, every link's probe socket and
a stop pipe together, and keeps a heap of timers (each link's probe round, probe timeouts,
trace samples). A kernel event or a probe answer is handled the moment it arrives, so a carrier
loss reaches the bus within milliseconds, and one link's probe timeout never delays another's.
paho's thread only talks to the broker.

Per link and round (every `interval_s`): send a probe, read the interface counters and the radio,
publish the metrics if the period is due. Link state is published (retained, QoS 1) on every
change; metrics (QoS 0, latest wins) every period and at once on a material change. With
`batch_metrics`, the periodic metrics of all links go out together as one `NodeMetrics` on the
node's metrics topic (`MetricsBatch` decides when; its deadline is a timer of the loop), and a
material change flushes what waits at once.

The monitor reads no bus topic; what it reads from the network are probe replies. A reply the
parser fails on is set aside on the node's dead-letter topic (`services.deadletter`) and the
loop goes on. Connection, presence, dead letters, metrics endpoint, signals and the order of
shutdown are the shared runtime's (`services.runtime.ServiceBus`).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt

from services import netns
from services.contracts.errors import ConfigError, Problem
from services.contracts.messages import Envelope, LinkMetrics, LinkState, NodeMetrics
from services.contracts.settings import BrokerSettings
from services.contracts.topics import Topics
from services.monitor.batch import MetricsBatch
from services.monitor.budget import BudgetFile, BudgetMeter, load_state, save_state
from services.monitor.config import LinkConfig, MonitorSettings, RadioSource
from services.monitor.link import LinkTracker, Radio
from services.monitor.metrics import MonitorMetrics
from services.monitor.netlink import InterfaceState, LinkEvents
from services.monitor.probe import Prober, open_prober, probe_bytes_per_hour
from services.monitor.radio import Nl80211Radio, RadioUnavailable
from services.monitor.trace import TraceReplay, TraceSample
from services.runtime import ServiceBus, on_signals
from services.wakeup import Stopper

log = logging.getLogger(__name__)
SERVICE = "monitor"
_EXPIRY_SLACK_S = 0.001  # a probe is lost once strictly older than the timeout


@dataclass
class _Link:
    """The live parts of one monitored link (sockets and sources) beside its tracker."""

    config: LinkConfig
    tracker: LinkTracker
    ident: int
    prober: Prober | None = None
    bound_index: int | None = None
    seq: int = 0
    radio: Nl80211Radio | None = None
    replay: TraceReplay | None = None
    samples: tuple[TraceSample, ...] = ()
    trace_started: float = 0.0


@dataclass(order=True)
class _Timer:
    due: float
    order: int
    action: Callable[[float], None] = field(compare=False)


class MonitorService:
    """Watches the node's links and publishes their state and metrics."""

    def __init__(
        self,
        settings: MonitorSettings,
        broker: BrokerSettings,
        *,
        netns_name: str | None = None,
        traces: dict[str, tuple[TraceSample, ...]] | None = None,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.netns_name = netns_name
        self.traces = traces if traces is not None else settings.load_traces()
        self.topics = Topics(broker.topic_root)
        self.stopper = Stopper()
        self.links: dict[str, _Link] = {}
        self._timers: list[_Timer] = []
        self._order = itertools.count()
        self._by_fd: dict[int, _Link] = {}
        self._poll = select.poll()
        self._events: LinkEvents | None = None
        self._republish = threading.Event()
        self._budgets = BudgetFile()
        self.batch: MetricsBatch | None = None
        if settings.batch_metrics:
            periods = {c.interface: settings.report_period_for(c) for c in settings.links}
            self.batch = MetricsBatch(settings.node, periods)
        self.metrics = MonitorMetrics(settings.node)
        self.bus = ServiceBus(
            service=SERVICE,
            node=settings.node,
            broker=broker,
            metrics=self.metrics,
            on_connected=self._on_connected,
        )
        self.client = self.bus.client
        self.dead_letters = self.bus.dead_letters

    @property
    def node(self) -> str:
        """The node this monitor watches."""
        return self.settings.node

    def run(self) -> None:
        """Connect, open the node's sockets and serve until `stop()`."""
        # The metrics endpoint and the bus stay in the namespace we started in.
        self.bus.start(self.settings.metrics_listen)
        if self.netns_name is not None:
            netns.enter(self.netns_name)
        events = LinkEvents([link.interface for link in self.settings.links], node=self.node)
        self._events = events
        try:
            self._start(events, time.monotonic())
            self.bus.online()
            self._serve(events)
        finally:
            self._shutdown(events)

    def run_in_signals(self) -> None:
        """`run` with SIGTERM/SIGINT mapped to `stop` (the CLI's entry)."""
        on_signals(self.node, self.stop)
        self.run()

    def stop(self) -> None:
        """Ask the loop to finish (thread-safe, signal-safe)."""
        self.stopper.stop()

    # --- start --------------------------------------------------------------------------

    def _start(self, events: LinkEvents, now: float) -> None:
        current = events.current()
        missing = [name for name, state in current.items() if not state.exists]
        if missing:
            raise ConfigError(
                [
                    Problem(f"interface {name} does not exist on node {self.node}", field=name)
                    for name in missing
                ]
            )
        self._poll.register(self.stopper.fileno(), select.POLLIN)
        self._poll.register(events.fileno(), select.POLLIN)
        if self.settings.budget_state is not None:
            self._budgets = load_state(self.settings.budget_state)
            self._at(now + self.settings.budget_save_s, self._save_budgets)
        base = random.randrange(0x10000)  # noqa: S311 - an identifier, not a secret
        for index, config in enumerate(self.settings.links):
            link = self._make_link(config, current[config.interface], (base + index) & 0xFFFF, now)
            self.links[config.interface] = link
            self._publish(link.tracker.start(now), now)
            self._at(now, self._round_of(link))
            if link.replay is not None:
                self._at(now, self._trace_of(link))
        log.info(
            "node %s: monitoring %s",
            self.node,
            ", ".join(
                f"{c.interface} (BID {c.bid}, {c.technology}, every "
                f"{self.settings.interval_for(c):.3g} s)"
                for c in self.settings.links
            ),
        )
        if self.batch is not None:
            log.info(
                "node %s: periodic metrics batched on %s",
                self.node,
                self.topics.node_metrics(self.node),
            )

    def _make_link(
        self, config: LinkConfig, state: InterfaceState, ident: int, now: float
    ) -> _Link:
        settings = self.settings
        meter = None
        if config.budget_bytes is not None:
            meter = BudgetMeter(
                config.budget_bytes,
                config.period,
                self._budgets.links.get(config.interface),
                time.time(),
            )
            self._budgets.links[config.interface] = meter.usage
        target = config.probe_target()
        per_hour = None
        if target is not None:
            per_hour = probe_bytes_per_hour(
                target.kind, target.address.version, settings.interval_for(config)
            )
        tracker = LinkTracker(
            self.node,
            config,
            window=settings.window,
            state=settings.state,
            publish=settings.publish,
            initial=state,
            now=now,
            brownout=settings.brownout,
            budget=meter,
            probe_bytes_per_hour=per_hour,
        )
        link = _Link(config, tracker, ident)
        self._open_prober(link, state)
        if config.radio is RadioSource.NL80211:
            try:
                link.radio = Nl80211Radio(config.interface)
            except RadioUnavailable as exc:
                raise ConfigError(
                    [Problem(f"radio of {config.interface}: {exc}", field="radio")]
                ) from exc
        samples = self.traces.get(config.interface)
        if samples is not None:
            link.samples = samples
            link.replay = TraceReplay(samples, start=now, speed=_speed(config))
            link.trace_started = now
        return link

    def _open_prober(self, link: _Link, state: InterfaceState) -> None:
        target = link.config.probe_target()
        if target is None:
            return
        if link.prober is not None:
            self._poll.unregister(link.prober.fileno())
            del self._by_fd[link.prober.fileno()]
            link.prober.close()
            link.prober = None
        interface = link.config.interface

        def undecodable(data: bytes, error: Exception) -> None:
            source = f"probe reply on {interface}"
            self.dead_letters.post(
                source=source, input_kind="probe-reply", payload=data, error=error
            )

        link.prober = open_prober(target, ident=link.ident, on_undecodable=undecodable)
        link.bound_index = state.index
        self._by_fd[link.prober.fileno()] = link
        self._poll.register(link.prober.fileno(), select.POLLIN)

    # --- loop ---------------------------------------------------------------------------

    def _serve(self, events: LinkEvents) -> None:
        stop_fd = self.stopper.fileno()
        events_fd = events.fileno()
        while not self.stopper.stopped:
            now = time.monotonic()
            if self._republish.is_set():
                self._republish.clear()
                for link in self.links.values():
                    self._publish(link.tracker.start(now, "monitor reconnected"), now)
            while self._timers and self._timers[0].due <= now:
                timer = heapq.heappop(self._timers)
                timer.action(now)
                now = time.monotonic()
            wait_ms = max(0, int((self._timers[0].due - now) * 1000) + 1) if self._timers else -1
            for fd, _ in self._poll.poll(wait_ms):
                if fd == stop_fd:
                    return
                if fd == events_fd:
                    self._interface_events(events)
                    continue
                answered = self._by_fd.get(fd)
                if answered is not None and answered.prober is not None:
                    seqs = answered.prober.drain()
                    now = time.monotonic()
                    self._publish(answered.tracker.answered(seqs, now), now)

    def _interface_events(self, events: LinkEvents) -> None:
        for state in events.drain():
            link = self.links.get(state.name)
            if link is None:
                continue
            now = time.monotonic()
            self._publish(link.tracker.interface_changed(state, now), now)
            if state.exists and state.index != link.bound_index and link.prober is not None:
                # SO_BINDTODEVICE holds the ifindex: a re-created device needs a new socket.
                log.info("node %s: %s re-created, re-binding its probe", self.node, state.name)
                self._open_prober(link, state)

    def _at(self, due: float, action: Callable[[float], None]) -> None:
        heapq.heappush(self._timers, _Timer(due, next(self._order), action))

    def _round_of(self, link: _Link) -> Callable[[float], None]:
        interval = self.settings.interval_for(link.config)
        timeout = self.settings.probe_timeout_s

        def round_(now: float) -> None:
            if link.prober is not None:
                link.seq = (link.seq + 1) % 2**32
                link.prober.send(link.seq)
                link.tracker.probe_sent(link.seq, now)
                self._at(now + timeout + _EXPIRY_SLACK_S, self._expiry_of(link))
            if link.radio is not None:
                reading = link.radio.read()
                if reading is not None:
                    radio = Radio.from_reading(reading)
                    self._publish(link.tracker.radio_changed(radio, now), now)
            self._read_counters(link)
            self._publish(link.tracker.tick(now), now, periodic=True)
            self._at(now + interval, round_)

        return round_

    def _read_counters(self, link: _Link) -> None:
        if self._events is None:
            return
        name = link.config.interface
        exists = link.tracker.interface.exists
        link.tracker.counters(self._events.counters(name) if exists else None, time.time())
        budget = link.tracker.budget
        if budget is not None:  # a period rollover made a new record
            self._budgets.links[name] = budget.usage

    def _save_budgets(self, now: float) -> None:
        self._write_budgets()
        self._at(now + self.settings.budget_save_s, self._save_budgets)

    def _write_budgets(self) -> None:
        path = self.settings.budget_state
        if path is None or not self._budgets.links:
            return
        try:
            save_state(path, self._budgets)
        except OSError as exc:
            log.error("node %s: budget state %s not saved: %s", self.node, path, exc)

    def _expiry_of(self, link: _Link) -> Callable[[float], None]:
        timeout = self.settings.probe_timeout_s

        def expire(now: float) -> None:
            self._publish(link.tracker.expire(now, timeout), now)

        return expire

    def _trace_of(self, link: _Link) -> Callable[[float], None]:
        def sample(now: float) -> None:
            replay = link.replay
            if replay is None:
                return
            current = replay.at(now)
            if current is not None:
                self._publish(link.tracker.radio_changed(Radio.from_sample(current), now), now)
            due = replay.next_change(now)
            if due is None and link.config.trace is not None and link.config.trace.loop:
                link.replay = TraceReplay(link.samples, start=now, speed=_speed(link.config))
                due = link.replay.next_change(now)
            if due is not None:
                self._at(due, sample)

        return sample

    # --- bus ----------------------------------------------------------------------------

    def _publish(self, messages: list[Envelope], now: float, *, periodic: bool = False) -> None:
        """Publish what a tracker returned at `now` (`periodic`: from its `tick`)."""
        for message in messages:
            if isinstance(message, LinkState):
                topic = self.topics.link_state(self.node, message.interface)
                self.bus.publish(topic, message, qos=1, retain=True)
                self.metrics.record(message)
                log.info(
                    "node %s: link %s (BID %d) %s: %s",
                    self.node,
                    message.interface,
                    message.bid,
                    "up" if message.up else "down",
                    message.reason,
                )
            elif isinstance(message, LinkMetrics):
                self.metrics.record(message, published=self.batch is None)
                if self.batch is None:
                    topic = self.topics.link_metrics(self.node, message.interface)
                    self.bus.publish(topic, message, qos=0)
                    continue
                before = self.batch.deadline
                batched = self.batch.add(message, periodic=periodic, now=now, wall=time.time())
                self._publish_batched(batched)
                deadline = self.batch.deadline
                if deadline is not None and deadline != before:
                    self._at(deadline, self._batch_due)

    def _batch_due(self, now: float) -> None:
        # Timers of deadlines since flushed or moved earlier find nothing due: harmless.
        if self.batch is not None:
            self._publish_batched(self.batch.due(now, time.time()))

    def _publish_batched(self, messages: list[NodeMetrics]) -> None:
        topic = self.topics.node_metrics(self.node)
        for message in messages:
            self.bus.publish(topic, message, qos=0)
            self.metrics.batch_published()

    def _on_connected(self, client: mqtt.Client) -> None:
        # The runtime has said online again; a restarted broker may also have lost the
        # retained link states: the loop thread (which owns the trackers) publishes them again
        # at its next wake-up.
        if self.links:
            self._republish.set()

    def _shutdown(self, events: LinkEvents) -> None:
        self._write_budgets()
        if self.batch is not None:  # the reports that wait are the freshest there are
            self._publish_batched(self.batch.flush(time.time()))
        for link in self.links.values():
            if link.prober is not None:
                link.prober.close()
            if link.radio is not None:
                link.radio.close()
        events.close()
        self.bus.close()
        self.stopper.close()
        log.info("node %s: monitor stopped", self.node)


def _speed(config: LinkConfig) -> float:
    return config.trace.speed if config.trace is not None else 1.0
