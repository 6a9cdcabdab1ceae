"""What every part of the engine shares: the routers' slots, the timers, the counters, and
which routers wait for a decision or a delivery.

The engine's parts (`reports`, `acks`, `configinputs`, `deciding`, `delivering`) each handle
one kind of work, and they meet here: an input marks its router as waiting (`waiting`), a
decision or an acknowledgement asks for a plan (`replan`), and `Engine.settle` works through
both sets once per batch. Only the decision thread touches an `Agenda`, so nothing locks.

After a restart the NSA knows no bindings (binding events are not retained), and a link
without a live binding is not eligible. So a router is first decided once every measured link
has had a binding event and `first_period_s` has passed since its first input (so that every
link's first report is in), or `startup_hold_s` after start (`check_ready`): a restart must
not withdraw or move policies out of ignorance. The workers keep their policies meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from services.nsa.core.inputs import MrView, Trigger, TriggerKind
from services.nsa.core.plan import MrLedgers, new_ledgers
from services.nsa.core.settings import NsaServiceSettings, RouterEntry
from services.nsa.core.slot import Slot, Stats, current_view, spread
from services.nsa.core.state import MrState
from services.nsa.core.timers import TimerKind, Timers

log = logging.getLogger(__name__)

#: When inputs of several kinds wait for one decision, the explanation names the strongest.
_STRENGTH = {
    TriggerKind.TIMER: 0,
    TriggerKind.METRICS: 1,
    TriggerKind.CONFIG: 2,
    TriggerKind.START: 3,
    TriggerKind.LINK_STATE: 4,
    TriggerKind.BINDING: 5,
    TriggerKind.HANDOVER_COMPLETED: 6,
    TriggerKind.HANDOVER_STARTED: 6,
}


class Agenda:
    """The replica's routers and what is due for them (see the module docstring)."""

    def __init__(
        self, settings: NsaServiceSettings, routers: Iterable[RouterEntry], *, now: float
    ) -> None:
        self.settings = settings
        self.stats = Stats()
        self.slots: dict[str, Slot] = {}
        self.by_node: dict[str, list[Slot]] = {}
        for router in routers:
            slot = Slot(
                router=router,
                view=MrView(mobile_router=router.id),
                state=MrState(mobile_router=router.id),
                ledgers=new_ledgers(
                    router.id,
                    ha_node=router.ha_node,
                    mr_node=router.mr_node,
                    scheme=settings.scheme,
                ),
            )
            slot.refresh_spread = 0.75 + 0.25 * spread(router.id)
            self.slots[router.id] = slot
            for node in (router.ha_node, router.mr_node):
                self.by_node.setdefault(node, []).append(slot)
        self.timers = Timers()
        self.to_decide: set[str] = set()
        self.to_deliver: set[str] = set()
        self.hold_until = now + settings.startup_hold_s
        self.timers.push(self.hold_until, TimerKind.HOLD)

    def waiting(self, slot: Slot, trigger: Trigger, now: float, sent: float | None = None) -> None:
        """`trigger` waits for the router's next decision (kept if it is the strongest)."""
        if slot.trigger is None or _STRENGTH[trigger.kind] >= _STRENGTH[slot.trigger.kind]:
            slot.trigger = trigger
        if sent is not None and (slot.oldest is None or sent < slot.oldest):
            slot.oldest = sent
        if not slot.ready:
            if slot.first_input_at is None:
                slot.first_input_at = now
                self.timers.push(
                    now + self.settings.first_period_s, TimerKind.READY, slot.router.id
                )
            self.check_ready(slot, now)
        if slot.ready:
            self.to_decide.add(slot.router.id)

    def reconfigured(self, now: float, what: str) -> None:
        """The configuration changed for every router: decide each again."""
        for slot in self.slots.values():
            self.waiting(slot, Trigger(kind=TriggerKind.CONFIG, detail=what), now)

    def check_ready(self, slot: Slot, now: float) -> None:
        """Whether the router may be decided from now on (see the module docstring)."""
        view = current_view(slot)
        measured = sorted(b for b, link in view.links.items() if link.technology is not None)
        unbound = [b for b in measured if b not in view.bindings]
        first = slot.first_input_at if slot.first_input_at is not None else now
        complete = measured and not unbound and now >= first + self.settings.first_period_s
        if not complete and now < self.hold_until:
            return
        slot.ready = True
        slot.trigger = Trigger(kind=TriggerKind.START, detail="first decision")
        if complete:
            log.info(
                "%s: deciding from now on (links measured and bound: %s)", slot.router.id, measured
            )
        else:
            log.warning(
                "%s: start-up hold over (%g s): deciding without binding events for BID %s "
                "(measured: %s)",
                slot.router.id,
                self.settings.startup_hold_s,
                unbound,
                measured,
            )

    def hold_over(self, now: float) -> None:
        """The start-up hold is over: every router not yet ready is decided now."""
        for slot in self.slots.values():
            if not slot.ready:
                self.waiting(slot, Trigger(kind=TriggerKind.START), now)

    def replan(self, slot: Slot) -> None:
        """The router's nodes may not hold what it wants: plan and deliver at `settle`."""
        slot.dirty = True
        self.to_deliver.add(slot.router.id)

    def set_ledgers(self, slot: Slot, ledgers: MrLedgers) -> None:
        """Replace the router's ledgers, counting each node whose state fell in doubt."""
        before = (slot.ledgers.ha, slot.ledgers.mr)
        for old, new in zip(before, (ledgers.ha, ledgers.mr), strict=True):
            if old is not None and new is not None and new.needs_resync and not old.needs_resync:
                self.stats.resyncs += 1
        slot.ledgers = ledgers
