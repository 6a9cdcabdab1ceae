"""The monitors' and the mobility service's inputs: link metrics, link state, binding events.

Each is applied to its router's view at once, and the router waits for its next decision
unless the input cannot change it: a metrics report inside the last decision's tolerance
(`materiality`) is kept aside, unapplied, and so is a binding event that leaves the binding's
status as it was (a refresh). Reports older than the last one of their link are dropped
(QoS 0 can reorder across reconnects), and a report sent more than `MAX_AHEAD_S` ahead of
our clock is refused (it would make the link's next reports look stale).
"""

from __future__ import annotations

from services.contracts.errors import InvalidInput, Problem
from services.contracts.messages import BindingEvent, LinkMetrics, LinkState
from services.nsa.core.agenda import Agenda
from services.nsa.core.inputs import apply_binding_event, apply_link_state, apply_metrics
from services.nsa.core.slot import Slot, current_view

#: How far ahead of our clock a report's send time may be (clocks of different hosts differ).
MAX_AHEAD_S = 300.0


class LinkReports:
    """Applies link metrics, link state and binding events to the routers' views."""

    def __init__(self, agenda: Agenda) -> None:
        self.agenda = agenda

    def metrics(self, slot: Slot, metrics: LinkMetrics, now: float) -> None:
        """A link's periodic report (kept aside when it cannot change the decision)."""
        stats = self.agenda.stats
        if not self._in_order(slot.metrics_seen, metrics.bid, metrics.timestamp, now):
            return
        stats.handled.append(metrics.timestamp)
        if slot.trigger is None and slot.tolerance is not None:
            held = slot.unapplied.get(metrics.bid)
            link = slot.view.links.get(metrics.bid)
            last = held[1] if held is not None else None if link is None else link.updated_at
            if slot.tolerance.admits(metrics, now, last):
                # Kept for the next decision, not applied now: a report replaces every
                # value of its link, so only the latest one per link matters.
                slot.unapplied[metrics.bid] = (metrics, now)
                stats.immaterial += 1
                return
        view = current_view(slot)
        slot.view, trigger = apply_metrics(view, metrics, now)
        self.agenda.waiting(slot, trigger, now, metrics.timestamp)

    def link_state(self, slot: Slot, state: LinkState, now: float) -> None:
        """A link went up or down."""
        if not self._in_order(slot.state_seen, state.bid, state.timestamp, now):
            return
        slot.view, trigger = apply_link_state(current_view(slot), state, now)
        self.agenda.waiting(slot, trigger, now, state.timestamp)

    def binding(self, slot: Slot, event: BindingEvent, now: float) -> None:
        """A binding event (a refresh that leaves the status as it was decides nothing)."""
        before = slot.view.bindings.get(event.bid)
        slot.view, trigger = apply_binding_event(current_view(slot), event, now)
        after = slot.view.bindings[event.bid]
        if (
            slot.trigger is None
            and slot.tolerance is not None
            and before is not None
            and before.status is after.status
        ):
            # A refresh (or a repeated event): the decision only reads the binding's status.
            self.agenda.stats.immaterial += 1
            return
        self.agenda.waiting(slot, trigger, now, event.timestamp)

    def _in_order(self, seen: dict[int, float], bid: int, timestamp: float, now: float) -> bool:
        """Record a link's newest send time; False (counted stale) for one older than it.

        A send time further ahead of our clock than `MAX_AHEAD_S` is refused (InvalidInput):
        recorded, it would make every later report of the link look stale until then.
        """
        if timestamp > now + MAX_AHEAD_S:
            problem = Problem(
                f"sent at {timestamp:.3f}, {timestamp - now:.0f} s ahead of this replica's "
                f"clock (more than {MAX_AHEAD_S:.0f} s): the sender's clock is wrong",
                field="timestamp",
            )
            raise InvalidInput([problem])
        last = seen.get(bid)
        if last is not None and timestamp < last:
            self.agenda.stats.stale += 1
            return False
        seen[bid] = timestamp
        return True
