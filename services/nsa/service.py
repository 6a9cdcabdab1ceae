"""`multinet nsa run`: one NSA replica, wired together, until SIGTERM.

Threads and who owns what:

- paho's network thread (`buslink`, on `services.runtime.ServiceBus`) and the metrics child
  process (`metrics_receiver`) sort
  each message by topic and queue it;
- the decision thread (`_loop`) owns every router's view, state, ledgers and timers (the
  `Engine`): it takes the inbox in batches, applies them, fires due timers and decides each
  router with waiting inputs once; between batches it runs the garbage collector's short
  passes (`Collector`);
- the delivery pool (`delivery`) makes the SOAP calls and queues their results;
- the metrics endpoint's thread (with `metrics_listen`) reads the decision thread's counters
  at each scrape; the decision thread only observes its decisions' latency;
- the main thread only waits and turns signals into inbox items: SIGHUP reloads the settings
  file (a bad file is refused whole and the running settings stay), SIGTERM/SIGINT stop.

A bus input whose handling raises (beyond the refusals the engine logs) is set aside on the
replica's dead-letter topic (`services.deadletter`) and the decision thread goes on: retained
inputs come back at every restart, so ending the process for one would stop the replica for
good. Any other unexpected exception ends the process with an error (the supervisor restarts
it); the workers keep enforcing their policies meanwhile.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from services.contracts.errors import InvalidInput
from services.contracts.messages import AuditRecord
from services.contracts.topics import Topics
from services.metrics import MetricsListenError
from services.nsa.buslink import BusIntake, connect
from services.nsa.core.calls import Call, CallResult
from services.nsa.core.configstore import ConfigStore
from services.nsa.core.documents import DecisionRecord
from services.nsa.core.engine import Engine
from services.nsa.core.partition import owned
from services.nsa.core.routes import InputKind, Raw, Routes
from services.nsa.delivery import make_delivery
from services.nsa.fleet import Fleet
from services.nsa.inbox import Inbox
from services.nsa.items import Cool, Fatal, Gain, Item, Lose, Reload, Stop, Warm
from services.nsa.leases import Leases
from services.nsa.metrics import DELIVERY_RESULTS, NsaCounts, NsaMetrics
from services.nsa.metrics_receiver import MetricsReceiver
from services.nsa.settings import NsaFile, load_file
from services.runtime import on_signals

log = logging.getLogger(__name__)

#: The most inputs the decision thread takes in one batch (the rest wait for the next).
BATCH_LIMIT = 5000


class NsaService:
    """One replica: bus link, decision thread and delivery; `start`/`stop` or `run`."""

    def __init__(
        self,
        path: Path,
        loaded: NsaFile,
        *,
        clock: Callable[[], float] = time.time,
        log_level: str = "INFO",
        collector: Collector | None = None,
    ) -> None:
        self.path = path
        self.clock = clock
        self.collector = collector
        settings = loaded.nsa
        self.name = settings.name
        self.topics = Topics(loaded.broker.topic_root)
        coordination = settings.coordination
        self.inbox: Inbox[Item] = Inbox(settings.queue_size)
        password = None if loaded.password is None else loaded.password.get_secret_value()
        self.delivery = make_delivery(settings.gateway, password, self._delivered, self._fatal)
        self.core: Engine | Fleet
        self.leases: Leases | None = None
        if coordination is None:
            self.routers = owned(settings.mobile_routers, settings.replicas, settings.replica)
            # A partitioned replica subscribes to its own routers' topics only.
            self.routes = Routes(self.topics, self.routers, per_router=settings.replicas > 1)
            self.core = Engine(
                settings, self.routers, ConfigStore(loaded.config), self, now=clock()
            )
            self.intake = BusIntake(self.routes, self.inbox)
        else:
            # Leased partitions: the routes know every router, the fleet says whose are here.
            self.routers = settings.mobile_routers
            self.routes = Routes(self.topics, self.routers)
            config = loaded.config
            fleet = Fleet(
                settings,
                self.topics,
                lambda: ConfigStore(config),
                self,
                subscribe=self._subscribe,
                unsubscribe=self._unsubscribe,
                partitions=coordination.partitions,
            )
            self.core = fleet
            self.intake = BusIntake(self.routes, self.inbox, fleet.filters)
            self.leases = Leases(coordination, settings.name, self.inbox.put_control)
        self.receiver = MetricsReceiver(
            loaded.broker,
            settings.name,
            self.routes,
            self.inbox,
            self._fatal,
            log_level=log_level,
            follow_partitions=coordination is not None,
        )
        self.metrics = NsaMetrics(settings.name, self._counts)
        self.bus = connect(loaded.broker, settings.name, self.intake, self.metrics)
        self.client = self.bus.client
        self.dead_letters = self.bus.dead_letters
        self.metrics_listen = settings.metrics_listen
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        if coordination is not None:
            log.info(
                "replica %s: %d mobile routers in %d partitions leased on etcd at %s",
                settings.name,
                len(self.routers),
                coordination.partitions,
                coordination.etcd,
            )
        log.info(
            "replica %s (%d of %d): deciding for %d of %d mobile routers, delivery %s",
            settings.name,
            settings.replica,
            settings.replicas,
            0 if coordination is not None else len(self.routers),
            len(settings.mobile_routers),
            settings.gateway.mode if settings.gateway.mode == "dry-run" else settings.gateway.url,
        )

    @property
    def engine(self) -> Engine:
        """The one engine of a replica without leases (tests and the benchmark read it)."""
        if not isinstance(self.core, Engine):
            raise RuntimeError(f"replica {self.name} leases partitions: one engine per partition")
        return self.core

    # the engine's effects -----------------------------------------------------------------
    def explain(self, mobile_router: str, record: DecisionRecord) -> None:
        """Publish a decision, retained, on the router's decision topic."""
        self.bus.publish_latest(self.topics.decision(mobile_router), record)

    def audit(self, mobile_router: str, record: AuditRecord) -> None:
        """Publish the outcome of an operator action on the router's audit topic (QoS 1)."""
        self.bus.publish(self.topics.audit(mobile_router), record)

    def deliver(self, call: Call) -> None:
        """Hand a call to the delivery pool."""
        self.delivery.deliver(call)

    def _subscribe(self, filters: list[str], metrics: list[str]) -> None:
        """Subscribe to a gained partition's topics: the main connection (QoS 1; their
        retained messages come in as inputs) and the metrics receiver's. While disconnected,
        the filters are asked again at the next connection anyway."""
        for start in range(0, len(filters), 500):
            self.client.subscribe([(f, 1) for f in filters[start : start + 500]])
        self.receiver.follow(metrics, [])

    def _unsubscribe(self, filters: list[str], metrics: list[str]) -> None:
        """Unsubscribe a lost partition's topics (those no other partition here needs)."""
        for start in range(0, len(filters), 500):
            self.client.unsubscribe(filters[start : start + 500])
        self.receiver.follow([], metrics)

    def _delivered(self, result: CallResult) -> None:
        # Results bypass the bound: there is at most one per router in flight, and the dry
        # run answers from the decision thread itself, which must not wait for room.
        self.inbox.put_control(result)

    def _fatal(self, error: BaseException) -> None:
        self.inbox.put_control(Fatal(error))

    def _counts(self) -> NsaCounts:
        """The decision thread's counters, read by the metrics endpoint at each scrape."""
        stats = self.core.stats
        return NsaCounts(
            inputs={kind.value: stats.inputs[kind.value] for kind in InputKind},
            decisions=stats.decisions,
            moves=stats.moves,
            deliveries={result: stats.deliveries[result] for result in DELIVERY_RESULTS},
            resyncs=stats.resyncs,
            inbox=len(self.inbox),
            dropped=self.inbox.dropped,
        )

    # life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Serve the metrics endpoint (when configured), connect, start the decision thread.
        Raises MetricsListenError when the endpoint's address cannot be bound."""
        self.bus.start(self.metrics_listen)
        self.bus.online()
        self.receiver.start()
        self._thread = threading.Thread(target=self._loop, name=f"nsa-decide-{self.name}")
        self._thread.start()
        if self.leases is not None:
            self.leases.start()

    def stop(self) -> None:
        """Hand the partitions over (revoke the leases), finish the decision thread,
        disconnect, stop the pool."""
        if self.leases is not None:
            self.leases.close()
        self.inbox.put_control(Stop())
        if self._thread is not None:
            self._thread.join(30)
        self.receiver.close()
        self.bus.close()
        self.delivery.close()

    def reload(self) -> None:
        """Ask the decision thread to re-read the settings file."""
        self.inbox.put_control(Reload())

    @property
    def running(self) -> bool:
        """Whether the decision thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; SIGHUP reloads. 1 when a thread failed."""

        def on_hup(signum: int, frame: FrameType | None) -> None:
            self.reload()

        on_signals(self.name, lambda: self.inbox.put_control(Stop()))
        signal.signal(signal.SIGHUP, on_hup)
        self.start()
        try:
            while self.running:
                assert self._thread is not None
                self._thread.join(0.5)
        finally:
            self.stop()
        return 1 if self.error is not None else 0

    # the decision thread ------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            while self._step():
                pass
        except BaseException as exc:
            self.error = exc
            log.exception("replica %s: the decision thread failed; exiting", self.name)

    def _step(self) -> bool:
        """One batch: inputs, due timers, decisions, calls. False once told to stop."""
        engine, clock = self.core, self.clock
        deadline = engine.next_deadline()
        timeout = None if deadline is None else max(0.0, deadline - clock())
        batch = self.inbox.take(timeout, BATCH_LIMIT)
        now = clock()
        for item in batch:
            if not self._handle(item, now):
                return False
        engine.due(now)
        engine.settle(now)
        end = clock()
        for seconds in engine.stats.batch_done(end):
            self.metrics.decision_seconds.observe(seconds)
        if self.collector is not None:
            self.collector.step(end)
        return True

    def _handle(self, item: Item, now: float) -> bool:
        if isinstance(item, Raw):
            self._accept(item, now)
        elif isinstance(item, CallResult):
            self.core.delivered(item, now)
        elif isinstance(item, Reload):
            self._reload(now)
        elif isinstance(item, Stop):
            return False
        elif isinstance(item, Warm | Gain | Lose | Cool):
            if isinstance(self.core, Fleet):
                self.core.control(item, now)
        else:
            raise RuntimeError("a delivery thread failed") from item.error
        return True

    def _accept(self, raw: Raw, now: float) -> None:
        """One bus input; if its handling raises, it becomes a dead letter, not a crash."""
        try:
            self.core.accept(raw, now)
        except Exception as exc:
            self.dead_letters.post(
                source=raw.topic, input_kind=raw.kind.value, payload=raw.payload, error=exc
            )

    def _reload(self, now: float) -> None:
        try:
            loaded = load_file(self.path)
        except InvalidInput as exc:
            log.error(
                "reload of %s refused, the running settings stay: %s",
                self.path,
                "; ".join(str(p) for p in exc.problems),
            )
            return
        restart = self.core.reload(loaded.nsa, loaded.config, now)
        if restart:
            log.warning(
                "reload of %s: %s changed; restart the replica to apply (running values kept)",
                self.path,
                ", ".join(restart),
            )
        log.info("reloaded %s: profiles, preferences, rules and decision settings", self.path)


class Collector:
    """Keeps the cyclic garbage collector's pauses short: it only ever traverses young objects.

    The NSA holds a few hundred thousand long-lived objects (views, states, ledgers of
    thousands of routers) and replaces some of them at every decision. CPython 3.11 starts a
    young collection when allocations minus deallocations pass a threshold, and replacing an
    old object by a new one counts zero: with the threshold raised to 50000 and the start-up
    frozen, the young generation still grew, uncollected, to most of the state (310,000
    objects 40 s after start at 3000 routers, whose collection took 260 ms), and the young
    collections that came paused the process for 0.5 to 1 s (measured; with the default
    thresholds, full passes took ~200 ms every few seconds). So automatic collection is off,
    and the decision thread calls `step` after every batch: every `period_s` it collects the
    young generation (what was made since the last time: 2-3 ms of work at 3000 routers, about
    2 us per report in all) and freezes what survived, so that no object is traversed twice;
    frozen objects are still freed by reference counting as usual.

    The steady state makes no reference cycles (measured: none in 20 s at 1000 routers); a
    cycle made within one period (an exception and its traceback) is still collected. A cycle
    that outlives a period (a SOAP call's objects in the delivery pool, say) is frozen before
    it becomes garbage, so every `full_period_s` the frozen objects are thawed and one full
    collection frees such cycles: leaks are bounded, at the price of one full pass (about
    200 ms at 3000 routers) a minute. Process-wide, so only the command's entry point makes
    one.
    """

    def __init__(self, period_s: float = 0.1, full_period_s: float = 60.0) -> None:
        self.period_s = period_s
        self.full_period_s = full_period_s
        self._next = 0.0
        self._next_full: float | None = None

    def start(self) -> None:
        """Freeze what start-up made (modules, schemas, settings) and stop automatic runs."""
        gc.freeze()
        gc.disable()

    def step(self, now: float) -> None:
        """Collect the young objects and freeze the survivors, once per period; once per
        full period, thaw everything and collect it all."""
        if self._next_full is None:
            self._next_full = now + self.full_period_s
        if now >= self._next_full:
            self._next_full = now + self.full_period_s
            self._next = now + self.period_s
            gc.unfreeze()
            gc.collect()
            gc.freeze()
        elif now >= self._next:
            self._next = now + self.period_s
            gc.collect(0)
            gc.freeze()


def main(path: Path, *, log_level: str = "INFO", json_logs: bool = False) -> int:
    """`multinet nsa run`: load, configure logging, run. 2 when the settings are invalid."""
    from services import logsetup

    try:
        loaded = load_file(path)
    except InvalidInput as exc:
        for problem in exc.problems:
            print(f"{path}: {problem}", file=sys.stderr)
        return 2
    logsetup.configure(loaded.nsa.name, level=log_level, json_lines=json_logs)
    # zeep logs every SOAP envelope at DEBUG: the decisions' log line says what was sent.
    for noisy in ("zeep", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLogger().level))
    collector = Collector()
    service = NsaService(path, loaded, log_level=log_level, collector=collector)
    collector.start()
    try:
        return service.run()
    except MetricsListenError as exc:
        print(f"replica {loaded.nsa.name}: {exc}", file=sys.stderr)
        return 1
