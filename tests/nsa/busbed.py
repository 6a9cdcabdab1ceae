"""Helpers for the NSA's tests on the real broker: settings files, a publisher playing the
monitors, mobility_events and the operator, a spy on the decisions, NSA processes.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml
from pydantic import ValidationError

from services import bus
from services.contracts.messages import (
    AuditRecord,
    BindingEvent,
    BindingEventKind,
    Envelope,
    LinkMetrics,
    NodeMetrics,
    PolicyStatus,
    decode,
    encode,
)
from services.contracts.settings import BrokerSettings
from services.contracts.topics import Topics
from services.nsa.core.documents import DecisionRecord
from services.process import stop
from tests.waiting import Watched, wait_for

TECH = {1: "wlan", 2: "lte", 3: "umts"}
VIDEO = {
    "name": "video",
    "selectors": [{"next_header": 17, "dst_port": {"first": 5001, "last": 5001}}],
}
DELAY_ONLY = [{"default": {"cost": 0, "delay": 1, "bandwidth": 0, "security": 0}}]


def wait_until(
    check: Callable[[], bool],
    what: str,
    timeout_s: float = 20.0,
    *,
    watch: Iterable[Watched] = (),
) -> None:
    """Poll `check` until it holds; fail naming `what` at the deadline, or at once (with its
    log) when a process of `watch` has exited."""
    wait_for(what, check, timeout_s, watch=watch, step=0.05)


def write_settings(
    path: Path,
    broker: BrokerSettings,
    routers: list[dict[str, str]],
    *,
    nsa: dict[str, Any] | None = None,
) -> Path:
    """An NSA settings file (YAML): the video class, delay-only weights, short timers."""
    table: dict[str, Any] = {
        "name": "nsa-test",
        "mobile_routers": routers,
        "startup_hold_s": 4.0,
        "first_period_s": 0.3,
        "refresh_s": None,
        "retry_s": 0.5,
        "retry_max_s": 2.0,
        "decision": {"dwell_s": 1.0, "margin": 0.1},
        "profiles": [VIDEO],
        "preferences": DELAY_ONLY,
        "gateway": {"mode": "dry-run"},
    }
    table.update(nsa or {})
    data = {
        "nsa": table,
        "broker": {
            "host": broker.host,
            "port": broker.port,
            "topic_root": broker.topic_root,
            "session_expiry_s": 0,
        },
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


class BusDriver:
    """Publishes like the monitors, mobility_events and the operator; records decisions.

    `batched`: each node's links are reported in one `NodeMetrics`, like a monitor with
    `batch_metrics`, instead of one `LinkMetrics` per link."""

    def __init__(self, broker: BrokerSettings, *, batched: bool = False) -> None:
        self.batched = batched
        self.broker = broker.model_copy(update={"session_expiry_s": 0})
        self.topics = Topics(broker.topic_root)
        self.decisions: list[DecisionRecord] = []
        self.audits: list[AuditRecord] = []  # operator actions' outcomes, from the NSA
        self.documents: list[tuple[str, bytes]] = []  # (node, payload) on policy topics
        self.statuses: list[PolicyStatus] = []  # the workers' answers, in arrival order
        self.unreadable = 0  # messages on those topics that do not parse (the fuzz tests')
        self._lock = threading.Lock()
        self.links: dict[tuple[str, int], dict[str, Any]] = {}  # (mr node, bid) -> values
        self.live: set[tuple[str, int]] = set()  # (mobile router, bid) with a live binding
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        subscribed = threading.Event()
        self.client = bus.make_client(self.broker, f"test-driver-{uuid.uuid4().hex[:10]}")
        self.client.on_connect = lambda c, *_: c.subscribe(
            [
                (f"{broker.topic_root}/mr/+/decision", 1),
                (f"{broker.topic_root}/node/+/policy", 1),
                (f"{broker.topic_root}/mr/+/audit", 1),
                (f"{broker.topic_root}/node/+/status", 1),
            ]
        )
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        bus.start(self.client, self.broker)
        assert subscribed.wait(10), "the test driver could not subscribe"

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        # What the driver cannot read is counted, not raised: an exception here would end
        # paho's network thread, and every later publish of the test would silently wait
        # (the fuzz tests publish damaged statuses on the topics this driver listens to).
        try:
            self._record(msg.topic, bytes(msg.payload))
        except ValidationError:
            with self._lock:
                self.unreadable += 1

    def _record(self, topic: str, payload: bytes) -> None:
        with self._lock:
            if topic.endswith("/decision") and payload:
                self.decisions.append(decode(DecisionRecord, payload))
            elif topic.endswith("/audit"):
                self.audits.append(decode(AuditRecord, payload))
            elif topic.endswith("/policy"):
                self.documents.append((topic.split("/")[-2], payload))
            elif topic.endswith("/status") and payload:
                self.statuses.append(decode(PolicyStatus, payload))

    def publish(self, topic: str, message: Envelope | bytes, *, retain: bool = False) -> None:
        payload = message if isinstance(message, bytes) else encode(message)
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(5)

    def binding(self, mobile_router: str, bid: int, kind: BindingEventKind) -> None:
        """A binding event; a registered binding is then refreshed every second, as the
        mobility events service reports each Binding Update's refresh (binding events are not
        retained: a late subscriber learns of a binding from its next refresh)."""
        event = BindingEvent(sender="ha-events", event=kind, mobile_router=mobile_router, bid=bid)
        self.publish(self.topics.binding_event(mobile_router, bid), event)
        with self._lock:
            if kind in (BindingEventKind.REGISTERED, BindingEventKind.REFRESHED):
                self.live.add((mobile_router, bid))
            else:
                self.live.discard((mobile_router, bid))

    def _refresh(self) -> None:
        with self._lock:
            live = sorted(self.live)
        for mobile_router, bid in live:
            event = BindingEvent(
                sender="ha-events",
                event=BindingEventKind.REFRESHED,
                mobile_router=mobile_router,
                bid=bid,
            )
            self.client.publish(self.topics.binding_event(mobile_router, bid), encode(event), qos=1)

    def metrics(self, mr_node: str, bid: int, **values: Any) -> None:
        """Set a link's values; the ticker reports them every period, like a monitor."""
        with self._lock:
            self.links[(mr_node, bid)] = {**self.links.get((mr_node, bid), {}), **values}
        self._report(mr_node, bid)

    def _report(self, mr_node: str, bid: int) -> None:
        if self.batched:
            with self._lock:
                bids = sorted(b for node, b in self.links if node == mr_node)
            entries = tuple(self._link_report(mr_node, b) for b in bids)
            message = NodeMetrics(sender=mr_node, links=entries)
            self.client.publish(self.topics.node_metrics(mr_node), encode(message), qos=0)
            return
        report = self._link_report(mr_node, bid)
        self.client.publish(self.topics.link_metrics(mr_node, f"if{bid}"), encode(report), qos=0)

    def _link_report(self, mr_node: str, bid: int) -> LinkMetrics:
        with self._lock:
            values = dict(self.links[(mr_node, bid)])
        base: dict[str, Any] = {
            "sender": mr_node,
            "interface": f"if{bid}",
            "bid": bid,
            "technology": TECH.get(bid, "wlan"),
            "rtt_ms": 20.0,
            "loss": 0.0,
            "bitrate_bps": 10e6,
            "cost_per_mb": 0.0,
        }
        return LinkMetrics(**{**base, **values})

    def start_ticking(self, period_s: float = 0.25) -> None:
        """Report every link every `period_s`, like a monitor's periodic metrics."""

        def tick() -> None:
            ticks = 0
            while not self._stop.wait(period_s):
                with self._lock:
                    keys = list(self.links)
                if self.batched:  # one report per node
                    keys = list({node: (node, bid) for node, bid in keys}.values())
                for mr_node, bid in keys:
                    self._report(mr_node, bid)
                ticks += 1
                if ticks % max(1, round(1.0 / period_s)) == 0:
                    self._refresh()

        self._ticker = threading.Thread(target=tick, name="test-monitor", daemon=True)
        self._ticker.start()

    def latest(self, mobile_router: str) -> DecisionRecord | None:
        with self._lock:
            found = [d for d in self.decisions if d.explanation.mobile_router == mobile_router]
        return found[-1] if found else None

    def class_bid(self, mobile_router: str, name: str = "video") -> int | None:
        """The BID the latest decision chose for the class (None: none yet or withdrawn)."""
        record = self.latest(mobile_router)
        if record is None:
            return None
        return record.explanation.for_class(name).chosen_bid

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(5)
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def ticking_driver(broker: BrokerSettings, *, batched: bool = False) -> Iterator[BusDriver]:
    """A BusDriver that re-publishes its routers' reports every 0.25 s, closed afterwards."""
    driver = BusDriver(broker, batched=batched)
    driver.start_ticking()
    try:
        yield driver
    finally:
        driver.close()


def watched_nsa(proc: subprocess.Popen[bytes], log: Path) -> list[Watched]:
    """The NSA process for `wait_until(..., watch=...)`."""
    return [Watched("nsa", proc, log)]


@contextmanager
def nsa_process(config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`multinet nsa run --config` as its own process, logging to `log`."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "services.cli",
                "nsa",
                "run",
                "--config",
                str(config),
                "--log-level",
                "DEBUG",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            stop(proc)


def tail(*logs: Path, chars: int = 3000) -> str:
    """The end of each log, for assertion messages."""
    return "\n".join(f"--- {p.name}\n{p.read_text()[-chars:]}" for p in logs if p.exists())
