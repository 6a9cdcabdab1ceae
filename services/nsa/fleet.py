"""The decision thread's routers when partitions are leased: one `Engine` per partition this
replica holds or warms, behind the interface the service drives a single engine through.

Only the decision thread calls a `Fleet`, except `filters` (paho's thread, at each
connection), which reads under a lock. What it does with the leases' items:

- `Warm(p)`: a fresh engine for p's routers, fed the binding events this replica has seen
  (they are not retained: every replica subscribes to all of them and keeps the latest per
  router and link), and p's topics subscribed, so the retained link state, presences,
  statuses and preferences come in; it only takes inputs: no timers, no decisions;
- `Gain(p, epoch)`: p's engine (the warm one, or a fresh one as above) decides from now
  on, every version it sends carrying `epoch` (`services.contracts.fencing`), and every
  router ready is decided again at once;
- `Lose(p)`: p's engine is dropped at once (its calls' answers are ignored) and p's topics
  unsubscribed; `Cool(p)` the same for a warmed one.

A fresh engine decides a router only once its links are measured and bound and
`first_period_s` has passed (or `startup_hold_s`): the same rule as after a restart, so a
takeover does not withdraw policies out of ignorance.

The metrics connection follows the partitions too (`MetricsReceiver.follow`: each router's
metrics topics belong to one partition); a report that still comes in for a router without
an engine here (just after a loss) is dropped before any parsing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from services.contracts.topics import Topics
from services.nsa.core.calls import CallResult
from services.nsa.core.config import NsaConfig
from services.nsa.core.configstore import ConfigStore
from services.nsa.core.effects import Effects
from services.nsa.core.engine import Engine
from services.nsa.core.ownership import partition_of, split, with_epoch
from services.nsa.core.routes import InputKind, Raw, Routes
from services.nsa.core.settings import NsaServiceSettings, RouterEntry
from services.nsa.core.slot import Stats
from services.nsa.items import Cool, Gain, Lose, Warm

log = logging.getLogger(__name__)

_BY_ROUTER = (
    InputKind.METRICS,
    InputKind.NODE_METRICS,
    InputKind.LINK_STATE,
    InputKind.BINDING,
    InputKind.PREFERENCES,
    InputKind.PIN,
)


class Fleet:
    """Per-partition engines (see the module docstring)."""

    def __init__(
        self,
        settings: NsaServiceSettings,
        topics: Topics,
        make_store: Callable[[], ConfigStore],
        effects: Effects,
        *,
        subscribe: Callable[[list[str], list[str]], None],
        unsubscribe: Callable[[list[str], list[str]], None],
        partitions: int,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.make_store = make_store
        self.effects = effects
        self._subscribe = subscribe
        self._unsubscribe = unsubscribe
        self.partitions = partitions
        self.routers: dict[int, tuple[RouterEntry, ...]] = split(
            settings.mobile_routers, partitions
        )
        self.partition = {r.id: partition_of(r.id, partitions) for r in settings.mobile_routers}
        self.engines: dict[int, Engine] = {}
        self.active: dict[int, int] = {}  # partition -> epoch, for the engines deciding
        self.stats = Stats()
        #: the latest binding event per topic (router and link), in arrival order
        self.bindings: dict[str, Raw] = {}
        self._lock = threading.Lock()
        self._filters: dict[str, int] = {}  # topic filter -> partitions needing it

    # subscriptions ------------------------------------------------------------------------
    def filters(self) -> list[str]:
        """The main connection's filters now: every binding event, the held partitions' topics."""
        with self._lock:
            return [self.topics.binding_events(), *self._filters]

    def _partition_filters(self, p: int) -> tuple[list[str], list[str]]:
        """The main connection's filters of p's routers, and their metrics' filters."""
        if not self.routers[p]:
            return [], []
        routes = Routes(self.topics, self.routers[p], per_router=True)
        return routes.filters(), routes.metrics_filters()

    def _add_filters(self, p: int) -> None:
        filters, metrics = self._partition_filters(p)
        new = []
        with self._lock:
            for f in filters:
                self._filters[f] = self._filters.get(f, 0) + 1
                if self._filters[f] == 1:
                    new.append(f)
        self._subscribe(new, metrics)

    def _drop_filters(self, p: int) -> None:
        filters, metrics = self._partition_filters(p)
        gone = []
        with self._lock:
            for f in filters:
                left = self._filters.get(f, 0) - 1
                if left <= 0:
                    self._filters.pop(f, None)
                    gone.append(f)
                else:
                    self._filters[f] = left
        self._unsubscribe(gone, metrics)

    # leases -------------------------------------------------------------------------------
    def control(self, item: Warm | Gain | Lose | Cool, now: float) -> None:
        """Act on one item of the leases' thread."""
        p = item.partition
        if isinstance(item, Warm):
            self._engine(p, now)
        elif isinstance(item, Gain):
            engine = self._engine(p, now)
            for slot in engine.slots.values():
                slot.ledgers = with_epoch(slot.ledgers, item.epoch)
            self.active[p] = item.epoch
            engine.reconfigured(now, f"partition {p} taken (epoch {item.epoch})")
            log.info(
                "deciding for partition %d (%d routers, epoch %d)",
                p,
                len(self.routers[p]),
                item.epoch,
            )
        else:
            self.active.pop(p, None)
            if self.engines.pop(p, None) is not None:
                self._drop_filters(p)
            if isinstance(item, Lose):
                log.info("stopped deciding for partition %d", p)

    def _engine(self, p: int, now: float) -> Engine:
        engine = self.engines.get(p)
        if engine is not None:
            return engine
        engine = Engine(self.settings, self.routers[p], self.make_store(), self.effects, now=now)
        engine.agenda.stats = self.stats
        self.engines[p] = engine
        for raw in self.bindings.values():
            if self.partition.get(raw.key) == p:
                engine.accept(raw, now)
        self._add_filters(p)
        return engine

    # the interface the service drives -----------------------------------------------------
    def accept(self, raw: Raw, now: float) -> None:
        """One bus input, to the engine(s) it concerns; a router of no engine here: dropped."""
        if raw.kind in _BY_ROUTER:
            if raw.kind is InputKind.BINDING:
                self.bindings.pop(raw.topic, None)
                self.bindings[raw.topic] = raw
            p = self.partition.get(raw.key)
            engine = None if p is None else self.engines.get(p)
            if engine is not None:
                engine.accept(raw, now)
            return
        for engine in list(self.engines.values()):
            if raw.kind is InputKind.RULES or raw.key in engine.agenda.by_node:
                engine.accept(raw, now)

    def delivered(self, result: CallResult, now: float) -> None:
        """A call's answer, to its router's engine if this replica still decides for it."""
        p = self.partition.get(result.call.mobile_router)
        if p is None or p not in self.active:
            return
        engine = self.engines[p]
        slot = engine.slots.get(result.call.mobile_router)
        # Each engine numbers its calls from 1: an answer to the call of an engine dropped
        # since (the partition lost, then taken again) may carry the number of this one's.
        if slot is not None and slot.call is not None and slot.call != result.call:
            log.info("%s: answer to an earlier holding's call ignored", result.call.mobile_router)
            return
        engine.delivered(result, now)

    def next_deadline(self) -> float | None:
        """The earliest timer of the deciding engines."""
        found = [self.engines[p].next_deadline() for p in self.active]
        return min((d for d in found if d is not None), default=None)

    def due(self, now: float) -> None:
        """Fire the deciding engines' due timers."""
        for p in list(self.active):
            self.engines[p].due(now)

    def settle(self, now: float) -> None:
        """Decide and deliver in the deciding engines (warm ones only take inputs)."""
        for p in list(self.active):
            self.engines[p].settle(now)

    def reload(self, settings: NsaServiceSettings, config: NsaConfig, now: float) -> list[str]:
        """A reloaded settings file, to every engine; the keys that need a restart."""
        restart: set[str] = set()
        for engine in self.engines.values():
            restart.update(engine.reload(settings, config, now))
        return sorted(restart)
