"""The decision thread's state machine: every owned router's view, state, ledgers and timers.

Only the decision thread calls an `Engine`, so nothing here locks. Inputs come in as `Raw`
bus messages and `CallResult`s; what goes out goes through `Effects` (publish a decision,
start a delivery). Time is an argument everywhere, so tests drive it with a fake clock.

The engine only dispatches; each part holds one responsibility and its rules:

- `agenda`: the routers' slots, timers and counters, which routers wait for a decision or a
  delivery, and when a router may first be decided after a restart;
- `reports`: link metrics, link state and binding events into the views;
- `acks`: the workers' statuses and presences into the ledgers;
- `configinputs`: retained preferences and operator rules, and settings reloads;
- `pinning`: operator pin requests into the routers' pins, and their audit records;
- `deciding`: one decision per router with inputs waiting, its explanation and timers;
- `delivering`: plans into gateway calls, one in flight per router, and their answers.

Per batch (`services.nsa.service`): `accept` each input and `delivered` each answer, `due`
for the timers, then `settle` decides each waiting router once and starts the calls due.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from pydantic import ValidationError

from services.contracts.echo import FIELD_LIMIT, echo
from services.contracts.errors import InvalidInput
from services.contracts.messages import (
    BindingEvent,
    LinkMetrics,
    LinkState,
    NodeMetrics,
    PinRequest,
    PolicyStatus,
    Presence,
    decode,
)
from services.nsa.core.acks import NodeReports
from services.nsa.core.agenda import Agenda
from services.nsa.core.calls import CallResult
from services.nsa.core.config import NsaConfig
from services.nsa.core.configinputs import ConfigInputs
from services.nsa.core.configstore import ConfigStore
from services.nsa.core.deciding import Decider
from services.nsa.core.delivering import Deliveries
from services.nsa.core.effects import Effects
from services.nsa.core.inputs import MrView
from services.nsa.core.pinning import PinRequests
from services.nsa.core.reports import LinkReports
from services.nsa.core.routes import InputKind, Raw
from services.nsa.core.settings import NsaServiceSettings, RouterEntry
from services.nsa.core.slot import Slot, Stats, current_view
from services.nsa.core.timers import TimerKind

log = logging.getLogger(__name__)


class Engine:
    """All per-router state of one replica; see the module docstring for its parts."""

    def __init__(
        self,
        settings: NsaServiceSettings,
        routers: Iterable[RouterEntry],
        store: ConfigStore,
        effects: Effects,
        *,
        now: float,
    ) -> None:
        self.store = store
        self.agenda = Agenda(settings, routers, now=now)
        self.reports = LinkReports(self.agenda)
        self.acks = NodeReports(self.agenda)
        self.config = ConfigInputs(self.agenda, store)
        self.decider = Decider(self.agenda, store, effects)
        self.deliveries = Deliveries(self.agenda, store, effects)
        self.pins = PinRequests(self.agenda, store, effects)

    @property
    def settings(self) -> NsaServiceSettings:
        """The settings running (a reload may have replaced them)."""
        return self.agenda.settings

    @property
    def stats(self) -> Stats:
        """Counters and recent latencies, read by the metrics, the benchmark and the tests."""
        return self.agenda.stats

    @property
    def slots(self) -> dict[str, Slot]:
        """Each owned router's slot, by id."""
        return self.agenda.slots

    # inputs -------------------------------------------------------------------------------
    def accept(self, raw: Raw, now: float) -> None:
        """Parse one bus message and apply it; refused input is logged with its topic.

        What the log repeats of the input (a field path made of the payload's own keys) is
        echoed (`services.contracts.echo`): a key may hold a newline that would forge a line.
        """
        stats = self.agenda.stats
        stats.inputs[raw.kind.value] += 1
        try:
            self._accept(raw, now)
        except ValidationError as exc:
            stats.refused += 1
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "payload"
            log.warning(
                "refused a malformed %s on %s: %s: %s (%d problem(s))",
                raw.kind.value,
                echo(raw.topic),
                echo(where, FIELD_LIMIT),
                echo(first["msg"]),
                exc.error_count(),
            )
        except InvalidInput as exc:
            stats.refused += 1
            log.warning("refused a %s on %s: %s", raw.kind.value, echo(raw.topic), exc)

    def _accept(self, raw: Raw, now: float) -> None:
        kind, slots = raw.kind, self.agenda.slots
        if kind is InputKind.METRICS:
            self.reports.metrics(slots[raw.key], decode(LinkMetrics, raw.payload), now)
        elif kind is InputKind.NODE_METRICS:
            # Validated whole first: a message with one bad entry applies none of them.
            slot = slots[raw.key]
            for entry in decode(NodeMetrics, raw.payload).links:
                self.reports.metrics(slot, entry, now)
        elif kind is InputKind.LINK_STATE:
            self.reports.link_state(slots[raw.key], decode(LinkState, raw.payload), now)
        elif kind is InputKind.BINDING:
            self.reports.binding(slots[raw.key], decode(BindingEvent, raw.payload), now)
        elif kind is InputKind.STATUS:
            self.acks.status(raw.key, decode(PolicyStatus, raw.payload))
        elif kind is InputKind.PRESENCE:
            self.acks.presence(raw.key, decode(Presence, raw.payload), now)
        elif kind is InputKind.PREFERENCES:
            self.config.preferences(raw, now)
        elif kind is InputKind.RULES:
            self.config.rules(raw, now)
        elif kind is InputKind.PIN:
            self.pins.request(slots[raw.key], decode(PinRequest, raw.payload), now)

    def delivered(self, result: CallResult, now: float) -> None:
        """A call's answer: acknowledge or lose each node, then plan again."""
        self.deliveries.delivered(result, now)

    def view_of(self, mobile_router: str) -> MrView:
        """What the engine knows of a router now (for tests and tools)."""
        return current_view(self.agenda.slots[mobile_router])

    def reconfigured(self, now: float, what: str) -> None:
        """The configuration changed for every router: decide each again."""
        self.agenda.reconfigured(now, what)

    def reload(self, settings: NsaServiceSettings, config: NsaConfig, now: float) -> list[str]:
        """Adopt a reloaded settings file; returns the keys that need a restart (kept)."""
        return self.config.reload(settings, config, now)

    # decisions and calls ------------------------------------------------------------------
    def settle(self, now: float) -> None:
        """Decide each router with inputs waiting, once, then start the calls now due."""
        agenda = self.agenda
        for mobile_router in sorted(agenda.to_decide):
            self.decider.decide(agenda.slots[mobile_router], now)
        agenda.to_decide.clear()
        for mobile_router in sorted(agenda.to_deliver):
            self.deliveries.deliver(agenda.slots[mobile_router], now)
        agenda.to_deliver.clear()

    # timers -------------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """When the earliest timer is due (None: no timer)."""
        return self.agenda.timers.next_deadline()

    def due(self, now: float) -> None:
        """Fire every timer due at `now`; the decisions they cause wait for `settle`."""
        agenda = self.agenda
        for at, kind, mobile_router, ident in agenda.timers.due(now):
            if kind is TimerKind.HOLD:
                agenda.hold_over(now)
                continue
            slot = agenda.slots[mobile_router]
            if kind is TimerKind.WAKE:
                self.decider.wake(slot, at, now)
            elif kind is TimerKind.REFRESH:
                self.decider.refresh(slot, now)
            elif kind is TimerKind.READY and not slot.ready:
                agenda.check_ready(slot, now)
                if slot.ready:
                    agenda.to_decide.add(mobile_router)
            elif kind is TimerKind.RETRY:
                self.deliveries.retry(slot, at)
            elif kind is TimerKind.DEADLINE:
                self.deliveries.deadline(slot, ident, now)
