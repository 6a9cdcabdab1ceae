"""One decision for one router: decide, publish the explanation, arm its timers, and ask
for a plan when what the nodes must hold changed.

A router with inputs waiting is decided once per batch, however many arrived; the trigger
named in the explanation is the strongest of them (`agenda`). After the decision the
router's tolerance (`materiality`) says which later reports cannot change it. Its timers:
`wake_at` of the decision (dwell times, metrics ages), and a periodic refresh, so the
retained explanation stays current (spread over 75-100 % of `refresh_s` per router).
"""

from __future__ import annotations

import logging

from services.nsa.core.agenda import Agenda
from services.nsa.core.configstore import ConfigStore
from services.nsa.core.decide import decide
from services.nsa.core.documents import DecisionRecord, budgets_of
from services.nsa.core.effects import Effects
from services.nsa.core.inputs import Trigger, TriggerKind
from services.nsa.core.materiality import tolerance
from services.nsa.core.pinning import expired
from services.nsa.core.pins import overridden
from services.nsa.core.slot import Slot, assignment, current_view
from services.nsa.core.summary import summarise
from services.nsa.core.timers import TimerKind

log = logging.getLogger(__name__)


class Decider:
    """Decides routers and keeps their wake and refresh timers."""

    def __init__(self, agenda: Agenda, store: ConfigStore, effects: Effects) -> None:
        self.agenda = agenda
        self.store = store
        self.effects = effects

    def decide(self, slot: Slot, now: float) -> None:
        """Decide the router now (see the module docstring)."""
        agenda, stats, settings = self.agenda, self.agenda.stats, self.agenda.settings
        trigger = slot.trigger or Trigger(kind=TriggerKind.TIMER)
        config = self.store.config_for(slot.router.id)
        view = current_view(slot)
        decision = decide(view, config, slot.state, now, trigger)
        if slot.pins:  # operator pins override the classes they name (`pins`)
            expired(agenda, self.effects, slot, now)
            decision = overridden(decision, config, slot.pins, now)
        changed = assignment(decision.state) != assignment(slot.state)
        slot.state = decision.state
        slot.tolerance = tolerance(slot.view, config, decision, now)
        slot.trigger = None
        if slot.oldest is not None:
            stats.decided.append(slot.oldest)
            slot.oldest = None
        stats.decisions += 1
        if trigger.kind is not TriggerKind.START:
            stats.moves += sum(1 for entry in decision.explanation.classes if entry.moved)
        if decision.wake_at is not None and decision.wake_at != slot.wake_at:
            slot.wake_at = decision.wake_at
            agenda.timers.push(decision.wake_at, TimerKind.WAKE, slot.router.id)
        if settings.refresh_s is not None:
            slot.refresh_at = now + settings.refresh_s * slot.refresh_spread
            if not slot.refresh_armed:
                slot.refresh_armed = True
                agenda.timers.push(slot.refresh_at, TimerKind.REFRESH, slot.router.id)
        record = DecisionRecord(
            sender=settings.name,
            replica=settings.replica,
            explanation=decision.explanation,
            budgets=budgets_of(view),
        )
        self.effects.explain(slot.router.id, record)
        if log.isEnabledFor(logging.INFO):  # the summary costs as much as a small decision
            log.info("decision %s", summarise(decision.explanation))
        if changed or trigger.kind in (TriggerKind.CONFIG, TriggerKind.START):
            slot.generation += 1
            agenda.replan(slot)

    def wake(self, slot: Slot, at: float, now: float) -> None:
        """A decision's `wake_at` came (unless a later decision moved it)."""
        if slot.wake_at == at:
            slot.wake_at = None
            self.agenda.waiting(slot, Trigger(kind=TriggerKind.TIMER), now)

    def refresh(self, slot: Slot, now: float) -> None:
        """Decide again when nothing did for `refresh_s`; a later decision moved the time."""
        slot.refresh_armed = False
        if slot.refresh_at is None:
            return
        if slot.refresh_at > now:
            slot.refresh_armed = True
            self.agenda.timers.push(slot.refresh_at, TimerKind.REFRESH, slot.router.id)
            return
        self.agenda.waiting(slot, Trigger(kind=TriggerKind.TIMER, detail="refresh"), now)
