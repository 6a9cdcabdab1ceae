"""`multinet nsa run`: one NSA replica, wired together, until SIGTERM.

Threads and who owns what:

- paho's two network threads (`buslink`) sort each message by topic and queue it;
- the decision thread (`_loop`) owns every router's view, state, ledgers and timers (the
  `Engine`): it takes the inbox in batches, applies them, fires due timers and decides each
  router with waiting inputs once;
- the delivery pool (`delivery`) makes the SOAP calls and queues their results;
- the main thread only waits and turns signals into inbox items: SIGHUP reloads the settings
  file (a bad file is refused whole and the running settings stay), SIGTERM/SIGINT stop.

An unexpected exception in any of them ends the process with an error (the supervisor
restarts it); the workers keep enforcing their policies meanwhile.
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
from services.contracts.messages import encode
from services.contracts.topics import Topics
from services.nsa.buslink import NsaBusLink
from services.nsa.calls import Call, CallResult
from services.nsa.configstore import ConfigStore
from services.nsa.delivery import make_delivery
from services.nsa.documents import DecisionRecord
from services.nsa.engine import Engine
from services.nsa.inbox import Inbox
from services.nsa.items import Fatal, Item, Reload, Stop
from services.nsa.metrics_receiver import MetricsReceiver
from services.nsa.partition import owned
from services.nsa.routes import Raw, Routes
from services.nsa.settings import NsaFile, load_file

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
    ) -> None:
        self.path = path
        self.clock = clock
        settings = loaded.nsa
        self.name = settings.name
        self.topics = Topics(loaded.broker.topic_root)
        self.routers = owned(settings.mobile_routers, settings.replicas, settings.replica)
        # A partitioned replica subscribes to its own routers' topics only.
        self.routes = Routes(self.topics, self.routers, per_router=settings.replicas > 1)
        self.inbox: Inbox[Item] = Inbox(settings.queue_size)
        password = None if loaded.password is None else loaded.password.get_secret_value()
        self.delivery = make_delivery(settings.gateway, password, self._delivered, self._fatal)
        self.engine = Engine(settings, self.routers, ConfigStore(loaded.config), self, now=clock())
        self.link = NsaBusLink(loaded.broker, settings.name, self.routes, self.inbox)
        self.metrics = MetricsReceiver(
            loaded.broker, settings.name, self.routes, self.inbox, self._fatal, log_level=log_level
        )
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        log.info(
            "replica %s (%d of %d): deciding for %d of %d mobile routers, delivery %s",
            settings.name,
            settings.replica,
            settings.replicas,
            len(self.routers),
            len(settings.mobile_routers),
            settings.gateway.mode if settings.gateway.mode == "dry-run" else settings.gateway.url,
        )

    # the engine's effects -----------------------------------------------------------------
    def explain(self, mobile_router: str, record: DecisionRecord) -> None:
        """Publish a decision, retained, on the router's decision topic."""
        self.link.publish(self.topics.decision(mobile_router), encode(record), retain=True)

    def deliver(self, call: Call) -> None:
        """Hand a call to the delivery pool."""
        self.delivery.deliver(call)

    def _delivered(self, result: CallResult) -> None:
        # Results bypass the bound: there is at most one per router in flight, and the dry
        # run answers from the decision thread itself, which must not wait for room.
        self.inbox.put_control(result)

    def _fatal(self, error: BaseException) -> None:
        self.inbox.put_control(Fatal(error))

    # life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Connect and start the decision thread."""
        self.link.start()
        self.metrics.start()
        self._thread = threading.Thread(target=self._loop, name=f"nsa-decide-{self.name}")
        self._thread.start()

    def stop(self) -> None:
        """Finish the decision thread, disconnect, stop the pool."""
        self.inbox.put_control(Stop())
        if self._thread is not None:
            self._thread.join(30)
        self.metrics.close()
        self.link.close()
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

        def on_stop(signum: int, frame: FrameType | None) -> None:
            log.info("replica %s: signal %d, stopping", self.name, signum)
            self.inbox.put_control(Stop())

        def on_hup(signum: int, frame: FrameType | None) -> None:
            self.reload()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
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
        engine, clock = self.engine, self.clock
        deadline = engine.next_deadline()
        timeout = None if deadline is None else max(0.0, deadline - clock())
        batch = self.inbox.take(timeout, BATCH_LIMIT)
        now = clock()
        for item in batch:
            if not self._handle(item, now):
                return False
        engine.due(now)
        engine.settle(now)
        engine.stats.batch_done(clock())
        return True

    def _handle(self, item: Item, now: float) -> bool:
        if isinstance(item, Raw):
            self.engine.accept(item, now)
        elif isinstance(item, CallResult):
            self.engine.delivered(item, now)
        elif isinstance(item, Reload):
            self._reload(now)
        elif isinstance(item, Stop):
            return False
        else:
            raise RuntimeError("a delivery thread failed") from item.error
        return True

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
        restart = self.engine.reload(loaded.nsa, loaded.config, now)
        if restart:
            log.warning(
                "reload of %s: %s changed; restart the replica to apply (running values kept)",
                self.path,
                ", ".join(restart),
            )
        log.info("reloaded %s: profiles, preferences, rules and decision settings", self.path)


def tune_collector() -> None:
    """Keep the cyclic garbage collector out of the decision latency.

    The NSA holds a few hundred thousand long-lived objects (views, states, ledgers of
    thousands of routers) and replaces some of them on every report; the collector's full
    passes over all of them took ~200 ms each (measured at 3000 routers), every few seconds,
    stalling every report behind them. The state is acyclic (frozen models, freed by
    reference counting), so: freeze what start-up made (modules, schemas, settings), and let
    the young generations grow larger so that objects replaced within a second or so never
    reach the old generation. Process-wide, so only the command's entry point calls this.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


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
    service = NsaService(path, loaded, log_level=log_level)
    tune_collector()
    return service.run()
