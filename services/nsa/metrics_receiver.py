"""The metrics connection in a process of its own, handing reports over in batches.

Monitors send one report per link per period: 9000 a second for 3000 routers of 3 links (or,
with `batch_metrics`, one `NodeMetrics` per node and period, on the node's metrics topic; the
child tags each message with its kind, taken from its topic).
paho spends ~40 us of Python on each incoming PUBLISH (reading it in several small socket
reads, building the message, dispatching it), all under the GIL. In the NSA's process that
work and the decisions shared one GIL: measured, the MQTT thread then waited for the GIL
after each socket read, fell behind, and reports queued up in the broker while the process
was not even at 100 % CPU. So the metrics connection runs in a child process: its one
thread sorts each report by topic (dropping other replicas' routers, `routes`) and appends it
to a list that the child sends every few milliseconds as one pickled batch through a pipe.
In the NSA's process, one reader thread turns each batch into inbox items (one GIL hand-over
per batch, not per report). The decision thread is unchanged: it only ever sees `Raw` items.

The child speaks MQTT 3.1.1 with a clean session: QoS 0 messages are never queued for an
absent client, so a session would keep nothing. It does not use paho (`metrics_link`,
`mqttframes`): paho spent 40-90 us per incoming report there, most of the NSA's cost per
report after the engine; read in large chunks and cut by hand, a report costs a few us.

With leased partitions (`services.nsa.fleet`) the child subscribes to nothing of its own:
the parent orders the filters of each partition gained or lost through a second pipe
(`follow`), so each replica receives only its partitions' reports, as with a static share.

If the child dies, the reader sees the pipe close and reports it as fatal: the service ends
and its supervisor restarts it (the workers keep their policies). The child ends when its
parent does (the pipe breaks, or its parent id changes).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from services import bus
from services.contracts.settings import BrokerSettings
from services.contracts.topics import Topics
from services.nsa.core.routes import InputKind, Raw, Routes
from services.nsa.core.settings import RouterEntry
from services.nsa.inbox import Inbox
from services.nsa.items import Item
from services.nsa.metrics_link import MetricsLink
from services.nsa.mqttframes import ProtocolError

log = logging.getLogger(__name__)

#: How often the child hands its reports over (the latency it adds, at most).
FLUSH_S = 0.002
#: Topic filters per SUBSCRIBE packet (a partitioned replica has one per router).
PER_SUBSCRIBE = 500
#: Topics whose router the child remembers: parsing a topic costs ~4 us, a lookup ~0.05 us
#: (measured), and every link reports on the same topic every period.
TOPIC_CACHE = 200_000

_Report = tuple[InputKind, str, str, bytes]  # (kind, mobile router, topic, payload)


class MetricsReceiver:
    """Starts the child, reads its batches into the inbox, stops it."""

    def __init__(
        self,
        broker: BrokerSettings,
        name: str,
        routes: Routes,
        inbox: Inbox[Item],
        fatal: Callable[[BaseException], None],
        *,
        log_level: str = "INFO",
        follow_partitions: bool = False,
    ) -> None:
        self.broker = broker
        self.follow_partitions = follow_partitions
        self.name = name
        self.routes = routes
        self.inbox = inbox
        self.fatal = fatal
        self.log_level = log_level
        self._process: Any = None
        self._reader: threading.Thread | None = None
        self._closing = False
        self._control: Connection | None = None
        self._control_lock = threading.Lock()

    def start(self) -> None:
        """Spawn the child (a fresh interpreter: no threads or locks inherited) and read it."""
        context = multiprocessing.get_context("spawn")
        receiving, sending = context.Pipe(duplex=False)
        orders, self._control = context.Pipe(duplex=False)
        plan = ChildPlan(
            broker=self.broker.model_dump(mode="json"),
            name=self.name,
            routers=tuple(r.model_dump() for r in self.routes.owned),
            per_router=self.routes.per_router,
            parent=os.getpid(),
            log_level=self.log_level,
            follow=self.follow_partitions,
        )
        self._process = context.Process(
            target=child_main,
            args=(plan, sending, orders),
            name=f"nsa-metrics-{self.name}",
            daemon=True,
        )
        self._process.start()
        sending.close()
        self._reader = threading.Thread(
            target=self._read, args=(receiving,), name=f"nsa-metrics-reader-{self.name}"
        )
        self._reader.daemon = True
        self._reader.start()

    def follow(self, subscribe: list[str], unsubscribe: list[str]) -> None:
        """Change the child's subscriptions (leased partitions gained or lost): sent to it
        as one order, applied at its next hand-over turn and at every reconnection."""
        with self._control_lock:
            if self._control is None:
                return
            try:
                self._control.send((tuple(subscribe), tuple(unsubscribe)))
            except OSError as exc:
                if not self._closing:
                    self.fatal(RuntimeError(f"the metrics receiver of {self.name}: {exc!r}"))

    @property
    def pid(self) -> int | None:
        """The child's process id, once started."""
        return None if self._process is None else int(self._process.pid)

    def close(self) -> None:
        """Stop the child."""
        self._closing = True
        if self._process is not None and self._process.is_alive():
            self._process.terminate()
            self._process.join(5)

    def _read(self, connection: Connection) -> None:
        inbox = self.inbox
        try:
            while True:
                reports: list[_Report] = pickle.loads(connection.recv_bytes())  # noqa: S301 (our own child)
                inbox.offer_many([Raw(i, k, t, p) for i, k, t, p in reports])
        except (EOFError, OSError) as exc:
            if not self._closing:
                self.fatal(RuntimeError(f"the metrics receiver of {self.name} ended: {exc!r}"))


@dataclass(frozen=True)
class ChildPlan:
    """What the child needs, as plain data (it is pickled to a fresh interpreter)."""

    broker: dict[str, Any]
    name: str
    routers: tuple[dict[str, Any], ...]
    per_router: bool
    parent: int
    log_level: str
    #: leased partitions: subscribe only to what the parent orders (`MetricsReceiver.follow`)
    follow: bool = False


class _Child:
    """The child's one thread: its connection, what it follows, the reports waiting."""

    def __init__(
        self, plan: ChildPlan, broker: BrokerSettings, routes: Routes, orders: Connection | None
    ) -> None:
        self.plan = plan
        self.routes = routes
        self.orders = orders
        self.link = MetricsLink(broker, bus.client_id("nsa-metrics", plan.name, broker.topic_root))
        self.pending: list[_Report] = []
        self.followed: dict[str, None] = {}  # the filters ordered, when following partitions
        #: topic -> (kind, router), None when not ours: each topic parsed once
        self.keys: dict[str, tuple[InputKind, str] | None] = {}
        self.attempt = 0
        self.retry_at = 0.0
        self.rng = random.Random()  # noqa: S311 - spreading retries, not a secret

    def filters(self) -> list[str]:
        """Everything to subscribe to at a (re)connection."""
        return list(self.followed) if self.plan.follow else self.routes.metrics_filters()

    def connect(self, now: float) -> None:
        """Connect and subscribe, or schedule the next attempt (jittered back-off)."""
        try:
            self.link.open()
            self.link.subscribe(self.filters(), PER_SUBSCRIBE)
        except (OSError, ProtocolError) as exc:
            self.link.close()
            delay = bus.reconnect_delay(self.attempt, self.rng.random())
            self.attempt += 1
            self.retry_at = now + delay
            log.warning(
                "replica %s: metrics connection failed (%s); again in %.1f s",
                self.plan.name,
                exc,
                delay,
            )
            return
        self.attempt = 0
        log.info("replica %s: metrics connection up", self.plan.name)

    def obey(self) -> None:
        """Apply the parent's orders waiting (leased partitions gained or lost)."""
        while self.orders is not None and self.orders.poll():
            add, remove = self.orders.recv()
            for f in remove:
                self.followed.pop(f, None)
            new = [f for f in add if f not in self.followed]
            self.followed.update(dict.fromkeys(new))
            self.link.unsubscribe(list(remove), PER_SUBSCRIBE)
            self.link.subscribe(new, PER_SUBSCRIBE)

    def sort(self, published: list[tuple[str, bytes]]) -> None:
        """Keep the reports of our routers, each topic parsed once."""
        keys, pending, route = self.keys, self.pending, self.routes.route
        for topic, payload in published:
            try:
                key = keys[topic]
            except KeyError:
                if len(keys) >= TOPIC_CACHE:  # bounded whatever the topics others publish
                    keys.clear()
                raw = route(topic, b"")
                key = keys[topic] = None if raw is None else (raw.kind, raw.key)
            if key is not None:
                pending.append((key[0], key[1], topic, payload))

    def turn(self, connection: Connection, flushed: float) -> float:
        """Read for up to the next hand-over, sort, obey, hand over; when it last did."""
        now = time.monotonic()
        if not self.link.connected:
            if now >= self.retry_at:
                self.connect(now)
            else:
                time.sleep(min(FLUSH_S, self.retry_at - now))
        else:
            # Let the reports gather in the socket until the next hand-over, then read them
            # at once: a read per report would cost more than cutting the report out.
            time.sleep(max(0.0, flushed + FLUSH_S - now))
            try:
                self.sort(self.link.read(0.0))
            except (OSError, ProtocolError) as exc:
                self.link.close()
                self.retry_at = now + bus.reconnect_delay(0, self.rng.random())
                self.attempt = 1
                log.warning("replica %s: metrics connection lost: %s", self.plan.name, exc)
        try:
            self.obey()
        except OSError as exc:
            self.link.close()
            log.warning("replica %s: metrics connection lost: %s", self.plan.name, exc)
        now = time.monotonic()
        if self.pending and now - flushed >= FLUSH_S:
            batch, self.pending = self.pending, []
            connection.send_bytes(pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL))
            return now
        return flushed if self.pending else now


def child_main(plan: ChildPlan, connection: Connection, orders: Connection | None = None) -> None:
    """The child: connect, subscribe, hand batches over until the parent is gone."""
    from services import logsetup

    logsetup.configure(f"{plan.name}-metrics", level=plan.log_level)
    broker = BrokerSettings.model_validate(plan.broker)
    routers = tuple(RouterEntry.model_validate(r) for r in plan.routers)
    routes = Routes(Topics(broker.topic_root), routers, per_router=plan.per_router)
    child = _Child(plan, broker, routes, orders)
    flushed = time.monotonic()
    try:
        while os.getppid() == plan.parent:
            flushed = child.turn(connection, flushed)
    except (BrokenPipeError, OSError):
        pass  # the parent is gone
    finally:
        child.link.close(polite=True)
