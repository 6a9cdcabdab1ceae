"""The NSA's view of one mobile router: its links and its bindings, updated from bus messages.

Each `apply_*` function takes the current view and one contract message and returns the new
view with the `Trigger` to pass to `decide`; nothing is mutated, so a service can keep the old
view if deciding fails. Times are the NSA's `now`, not the sender's timestamp, so they compare
with the `now` of later decisions.

Binding events: registered, refreshed and coa-changed make a binding live; handover-started
marks it in handover (not usable until the handover completes); deregistered, expired and
rejected make it gone. A BID without a live binding is not eligible.
"""

from __future__ import annotations

from enum import StrEnum
from ipaddress import ip_address

from pydantic import Field

from services.contracts.errors import InvalidInput, Problem
from services.contracts.messages import BindingEvent, BindingEventKind, LinkMetrics, LinkState
from services.contracts.policy import Bid, NodeId
from services.nsa.core.config import Technology
from services.nsa.core.frozen import Frozen


class BindingStatus(StrEnum):
    """Whether a binding can carry flows now."""

    LIVE = "live"
    HANDOVER = "handover"  # the care-of address is changing: flows leave at once
    GONE = "gone"


_STATUS_AFTER = {
    BindingEventKind.REGISTERED: BindingStatus.LIVE,
    BindingEventKind.REFRESHED: BindingStatus.LIVE,
    BindingEventKind.COA_CHANGED: BindingStatus.LIVE,
    BindingEventKind.HANDOVER_STARTED: BindingStatus.HANDOVER,
    BindingEventKind.DEREGISTERED: BindingStatus.GONE,
    BindingEventKind.EXPIRED: BindingStatus.GONE,
    BindingEventKind.REJECTED: BindingStatus.GONE,
}


class Binding(Frozen):
    """The last known state of one binding (MR, BID)."""

    bid: Bid
    status: BindingStatus
    event: BindingEventKind
    care_of_address: str | None = None
    since: float = Field(description="when the status last changed (NSA time)")
    handover_at: float | None = Field(
        default=None, description="when its last handover started (NSA time), if ever"
    )


class Link(Frozen):
    """The last metrics and state of one access link (MR, BID).

    `technology` is None until the first metrics arrive (a link state does not carry it);
    such a link is not eligible. A link first seen through its metrics is taken as up.
    """

    bid: Bid
    interface: str = ""
    technology: Technology | None = None
    up: bool = True
    rtt_ms: float | None = None
    jitter_ms: float | None = None
    loss: float | None = None
    rx_bps: float | None = None
    tx_bps: float | None = None
    bitrate_bps: float | None = None
    signal_dbm: float | None = None
    cost_per_mb: float | None = None
    updated_at: float | None = Field(default=None, description="when metrics last arrived")
    budget_bytes: int | None = None
    budget_used_bytes: int | None = None
    budget_period_end: float | None = Field(default=None, description="unix time")

    @property
    def budget_share(self) -> float | None:
        """Used / budget in the billing period, None without a budget."""
        if self.budget_bytes is None or self.budget_used_bytes is None:
            return None
        return self.budget_used_bytes / self.budget_bytes


class MrView(Frozen):
    """Everything measured and signalled about one mobile router."""

    mobile_router: NodeId
    links: dict[Bid, Link] = Field(default_factory=dict)
    bindings: dict[Bid, Binding] = Field(default_factory=dict)

    def bids(self) -> tuple[int, ...]:
        """Every BID heard of, through metrics, link state or bindings, in ascending order."""
        return tuple(sorted(self.links.keys() | self.bindings.keys()))

    def binding_status(self, bid: int) -> BindingStatus | None:
        """The binding's status, or None when no event was ever seen for this BID."""
        binding = self.bindings.get(bid)
        return None if binding is None else binding.status


class TriggerKind(StrEnum):
    """What made the NSA decide (recorded in every explanation)."""

    METRICS = "metrics"
    LINK_STATE = "link-state"
    BINDING = "binding-event"
    HANDOVER_STARTED = "handover-started"
    HANDOVER_COMPLETED = "handover-completed"
    TIMER = "timer"  # a dwell time or a metrics age ran out (see Decision.wake_at)
    CONFIG = "config"  # preferences, profiles or operator rules changed
    START = "start"


class Trigger(Frozen):
    """The input that caused a decision."""

    kind: TriggerKind
    bid: Bid | None = None
    detail: str = ""


def apply_metrics(view: MrView, metrics: LinkMetrics, now: float) -> tuple[MrView, Trigger]:
    """Record one link's metrics; the link keeps its up/down state."""
    old = view.links.get(metrics.bid) or Link(bid=metrics.bid)
    link = old.model_copy(
        update={
            "interface": metrics.interface,
            "technology": metrics.technology,
            "rtt_ms": metrics.rtt_ms,
            "jitter_ms": metrics.jitter_ms,
            "loss": metrics.loss,
            "rx_bps": metrics.rx_bps,
            "tx_bps": metrics.tx_bps,
            "bitrate_bps": metrics.bitrate_bps,
            "signal_dbm": metrics.signal_dbm,
            "cost_per_mb": metrics.cost_per_mb,
            "budget_bytes": metrics.budget_bytes,
            "budget_used_bytes": metrics.budget_used_bytes,
            "budget_period_end": metrics.budget_period_end,
            "updated_at": now,
        }
    )
    trigger = Trigger(kind=TriggerKind.METRICS, bid=metrics.bid, detail=metrics.interface)
    return _with_link(view, link), trigger


def apply_link_state(view: MrView, state: LinkState, now: float) -> tuple[MrView, Trigger]:
    """Record a link going up or down: usable only when administratively up with carrier.

    A link state also lists the link's usable addresses. When a live binding's care-of
    address is no longer among them, its pipe is broken until the MR registers another
    address: the binding goes into handover here, without waiting for the Binding Update
    that mobility_events reports (the MR's monitor sees the address go in a few ms; the BU
    follows after the MR agent's own reaction, 10-60 ms later, bench.reaction (c)). Such a
    handover ends with the BU's coa-changed or registered event, as any other, or when the
    address is listed again (the MR then sends no BU). A state listing no address at all
    (a monitor that does not report them) changes no binding."""
    old = view.links.get(state.bid) or Link(bid=state.bid)
    up = state.up and state.carrier
    link = old.model_copy(update={"interface": state.interface, "up": up})
    detail = f"{state.interface} {'up' if up else 'down'}" + (
        f": {state.reason}" if state.reason else ""
    )
    new_view = _with_link(view, link)
    binding = view.bindings.get(state.bid)
    if binding is None or binding.care_of_address is None or not state.addresses:
        return new_view, Trigger(kind=TriggerKind.LINK_STATE, bid=state.bid, detail=detail)
    care_of = binding.care_of_address
    listed = bool(_addresses((care_of,)) & _addresses(state.addresses))
    if binding.status is BindingStatus.LIVE and not listed:
        changed = binding.model_copy(
            update={"status": BindingStatus.HANDOVER, "since": now, "handover_at": now}
        )
        why = f"care-of address {care_of} gone from {state.interface}"
        kind = TriggerKind.HANDOVER_STARTED
    elif binding.status is BindingStatus.HANDOVER and _by_address(binding) and listed:
        changed = binding.model_copy(update={"status": BindingStatus.LIVE, "since": now})
        why = f"care-of address {care_of} back on {state.interface}"
        kind = TriggerKind.HANDOVER_COMPLETED
    else:
        return new_view, Trigger(kind=TriggerKind.LINK_STATE, bid=state.bid, detail=detail)
    bindings = {**view.bindings, state.bid: changed}
    return new_view.model_copy(update={"bindings": bindings}), Trigger(
        kind=kind, bid=state.bid, detail=why
    )


def _by_address(binding: Binding) -> bool:
    """A handover started by the care-of address leaving the link (`apply_link_state`), not
    by a handover-started event: its last event is still the one that made it live."""
    return binding.event is not BindingEventKind.HANDOVER_STARTED


def _addresses(listed: tuple[str, ...]) -> set[str]:
    """The addresses of a link state in one spelling (compressed, no prefix length)."""
    found: set[str] = set()
    for text in listed:
        try:
            found.add(str(ip_address(text.split("/", 1)[0].split("%", 1)[0])))
        except ValueError:
            continue  # not an address: it cannot be a care-of address either
    return found


def apply_binding_event(view: MrView, event: BindingEvent, now: float) -> tuple[MrView, Trigger]:
    """Record a binding event; raises InvalidInput when it concerns another mobile router."""
    if event.mobile_router != view.mobile_router:
        raise InvalidInput(
            [
                Problem(
                    f"binding event for {event.mobile_router!r} given to the view of "
                    f"{view.mobile_router!r}",
                    field="mobile_router",
                )
            ]
        )
    old = view.bindings.get(event.bid)
    status = _STATUS_AFTER[event.event]
    since = old.since if old is not None and old.status is status else now
    handover_at = old.handover_at if old is not None else None
    if status is BindingStatus.HANDOVER and (old is None or old.status is not status):
        handover_at = now
    binding = Binding(
        bid=event.bid,
        status=status,
        event=event.event,
        care_of_address=event.care_of_address,
        since=since,
        handover_at=handover_at,
    )
    bindings = {**view.bindings, event.bid: binding}
    new_view = view.model_copy(update={"bindings": bindings})
    trigger = _binding_trigger(old, binding)
    link = view.links.get(event.bid)
    if trigger.kind is TriggerKind.HANDOVER_COMPLETED and link is not None and not link.up:
        # The Binding Update from the new care-of address and its Acknowledgement crossed
        # this link: evidence, newer than the monitor's last "down", that it carries packets
        # again (the monitor's own "up" waits for several probes). Its next state still wins.
        new_view = _with_link(new_view, link.model_copy(update={"up": True}))
    return new_view, trigger


def _binding_trigger(old: Binding | None, new: Binding) -> Trigger:
    if new.status is BindingStatus.HANDOVER:
        kind = TriggerKind.HANDOVER_STARTED
    elif (
        new.status is BindingStatus.LIVE
        and old is not None
        and old.status is BindingStatus.HANDOVER
    ):
        kind = TriggerKind.HANDOVER_COMPLETED
    else:
        kind = TriggerKind.BINDING
    return Trigger(kind=kind, bid=new.bid, detail=new.event.value)


def _with_link(view: MrView, link: Link) -> MrView:
    return view.model_copy(update={"links": {**view.links, link.bid: link}})
