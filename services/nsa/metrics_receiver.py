"""The metrics connection in a process of its own, handing reports over in batches.

Monitors send one report per link per period: 9000 a second for 3000 routers of 3 links.
paho spends ~40 us of Python on each incoming PUBLISH (reading it in several small socket
reads, building the message, dispatching it), all under the GIL. In the NSA's process that
work and the decisions shared one GIL: measured, the MQTT thread then waited for the GIL
after each socket read, fell behind, and reports queued up in the broker while the process
was not even at 100 % CPU. So the metrics connection runs in a child process: its paho
thread sorts each report by topic (dropping other replicas' routers, `routes`) and appends it
to a list that the child sends every few milliseconds as one pickled batch through a pipe.
In the NSA's process, one reader thread turns each batch into inbox items (one GIL hand-over
per batch, not per report). The decision thread is unchanged: it only ever sees `Raw` items.

The child speaks MQTT 3.1.1 with a clean session: QoS 0 messages are never queued for an
absent client, so a session would keep nothing, and paho parses an MQTT 5 property block for
every PUBLISH (measured: half of its cost per message).

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
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import paho.mqtt.client as mqtt

from services import bus
from services.contracts.settings import BrokerSettings
from services.contracts.topics import Topics
from services.nsa.core.routes import InputKind, Raw, Routes
from services.nsa.core.settings import RouterEntry
from services.nsa.inbox import Inbox
from services.nsa.items import Item

log = logging.getLogger(__name__)

#: How often the child hands its reports over (the latency it adds, at most).
FLUSH_S = 0.002
#: Topic filters per SUBSCRIBE packet (a partitioned replica has one per router).
PER_SUBSCRIBE = 500
#: Topics whose router the child remembers: parsing a topic costs ~4 us, a lookup ~0.05 us
#: (measured), and every link reports on the same topic every period.
TOPIC_CACHE = 200_000

_Report = tuple[str, str, bytes]  # (mobile router, topic, payload)


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
                inbox.offer_many([Raw(InputKind.METRICS, k, t, p) for k, t, p in reports])
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
    """The child's paho callbacks and the parent's orders (only paho's thread and the
    child's main loop touch it; paho's calls are thread-safe)."""

    def __init__(self, plan: ChildPlan, routes: Routes, orders: Connection | None) -> None:
        self.plan = plan
        self.routes = routes
        self.orders = orders
        self.pending: deque[_Report] = deque()
        self.followed: dict[str, None] = {}  # the filters ordered, when following partitions
        self.keys: dict[str, str | None] = {}  # topic -> router (None: not ours), parsed once

    @staticmethod
    def subscribe(client: mqtt.Client, filters: list[str]) -> None:
        for start in range(0, len(filters), PER_SUBSCRIBE):
            client.subscribe([(f, 0) for f in filters[start : start + PER_SUBSCRIBE]])

    def on_connect(
        self, client: mqtt.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        log.info("replica %s: metrics connection up (%s)", self.plan.name, reason)
        bus.reset_backoff(client, reason)
        filters = list(self.followed) if self.plan.follow else self.routes.metrics_filters()
        self.subscribe(client, filters)

    def obey(self, client: mqtt.Client) -> None:
        """Apply the parent's orders waiting (leased partitions gained or lost)."""
        while self.orders is not None and self.orders.poll():
            add, remove = self.orders.recv()
            for f in remove:
                self.followed.pop(f, None)
            new = [f for f in add if f not in self.followed]
            self.followed.update(dict.fromkeys(new))
            for start in range(0, len(remove), PER_SUBSCRIBE):
                client.unsubscribe(list(remove[start : start + PER_SUBSCRIBE]))
            if new:
                self.subscribe(client, new)

    def on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        topic, keys = msg.topic, self.keys
        try:
            key = keys[topic]
        except KeyError:
            if len(keys) >= TOPIC_CACHE:  # bounded whatever the topics others publish
                keys.clear()
            raw = self.routes.route(topic, b"")
            key = keys[topic] = None if raw is None else raw.key
        if key is not None:
            self.pending.append((key, topic, bytes(msg.payload)))


def child_main(plan: ChildPlan, connection: Connection, orders: Connection | None = None) -> None:
    """The child: connect, subscribe, hand batches over until the parent is gone."""
    from services import logsetup

    logsetup.configure(f"{plan.name}-metrics", level=plan.log_level)
    broker = BrokerSettings.model_validate(plan.broker)
    routers = tuple(RouterEntry.model_validate(r) for r in plan.routers)
    child = _Child(
        plan, Routes(Topics(broker.topic_root), routers, per_router=plan.per_router), orders
    )
    pending = child.pending
    client = metrics_client(broker, plan.name)
    client.on_connect = child.on_connect
    client.on_message = child.on_message
    client.connect_async(broker.host, broker.port, broker.keepalive_s)
    client.loop_start()
    try:
        while os.getppid() == plan.parent:
            time.sleep(FLUSH_S)
            child.obey(client)
            if not pending:
                continue
            batch = [pending.popleft() for _ in range(len(pending))]
            connection.send_bytes(pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL))
    except (BrokenPipeError, OSError):
        pass  # the parent is gone
    finally:
        client.disconnect()
        client.loop_stop()


def metrics_client(broker: BrokerSettings, name: str) -> mqtt.Client:
    """The services' client (credentials, TLS, jittered reconnects, Nagle off) speaking MQTT
    3.1.1 with a clean session (see the module docstring), with an id of its own per
    (replica, deployment) beside the main connection's."""
    client_id = bus.client_id("nsa-metrics", name, broker.topic_root)
    return bus.make_client(broker, client_id, protocol=mqtt.MQTTv311)
