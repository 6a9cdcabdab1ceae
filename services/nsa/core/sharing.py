"""Load sharing over time: a stable set of member links, flows spread over it by weight.

A link leaves the member set at once when it stops being eligible and joins after being
eligible for the dwell time (at once when it returns from a handover, or when no link is a
member yet). Flows a handover took away return to their link when it completes.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.nsa.core.config import ApplicationProfile
from services.nsa.core.explain import Reason
from services.nsa.core.inputs import BindingStatus
from services.nsa.core.stability import WITHDRAWN, Context, Outcome, still_awaiting
from services.nsa.core.state import ClassState
from services.nsa.core.steering import Candidate, apportion, share_flows, share_weight


def choose_shared(
    profile: ApplicationProfile,
    ranked: tuple[Candidate, ...],
    previous: ClassState,
    ctx: Context,
) -> Outcome:
    """Load sharing: keep the member set stable, then spread the flows over it by weight."""
    view, settings, now, count = ctx.view, ctx.settings, ctx.now, ctx.count
    by_bid = {c.bid: c for c in ranked}
    since = {b: previous.eligible_since.get(b, now) for b in by_bid}
    holding = set(previous.members) | set(previous.flows)
    lost = sorted(b for b in holding if b not in by_bid)
    in_handover = [b for b in lost if view.binding_status(b) is BindingStatus.HANDOVER]
    awaiting = still_awaiting((*previous.awaiting, *in_handover), view, by_bid)
    returning = [b for b in awaiting if b in by_bid]
    awaiting = tuple(b for b in awaiting if b not in by_bid)
    kept = {b for b in holding if b in by_bid}
    joining = {b for b in by_bid if b in returning or now - since[b] >= settings.dwell_s} - kept
    members = tuple(sorted(kept | joining)) or tuple(sorted(by_bid))
    if not members:
        detail = "; ".join(f"BID {b} excluded" for b in lost)
        return Outcome(
            flows=(),
            reason=Reason.NO_ELIGIBLE_LINK,
            detail=f"{detail + '; ' if detail else ''}{WITHDRAWN}",
            awaiting=awaiting,
            eligible_since=since,
            displaced={b: v for b, v in _displaced(previous, in_handover).items() if b in awaiting},
        )
    displaced = _displaced(previous, in_handover)
    old: list[int | None] = [*previous.flows[:count], *([None] * (count - len(previous.flows)))]
    for bid in returning:  # the flows a handover took away go back to their link first
        for index in displaced.get(bid, ()):
            if index < count:
                old[index] = bid
    weights = {b: share_weight(profile.shares, b, by_bid[b].technology) for b in members}
    flows = share_flows(old, apportion(count, weights))
    reason, detail = _shared_reason(
        previous, flows, lost=lost, in_handover=in_handover, returning=returning, joining=joining
    )
    return Outcome(
        flows=flows,
        reason=reason,
        detail=detail,
        awaiting=awaiting,
        members=members,
        eligible_since=since,
        displaced={b: v for b, v in displaced.items() if b in awaiting},
    )


def _displaced(previous: ClassState, in_handover: Sequence[int]) -> dict[int, tuple[int, ...]]:
    """Which flows each link in handover held, so that they return to it afterwards."""
    displaced = dict(previous.displaced)
    for bid in in_handover:
        displaced[bid] = tuple(i for i, f in enumerate(previous.flows) if f == bid)
    return displaced


def _shared_reason(
    previous: ClassState,
    flows: tuple[int, ...],
    *,
    lost: Sequence[int],
    in_handover: Sequence[int],
    returning: Sequence[int],
    joining: set[int],
) -> tuple[Reason, str]:
    if flows == previous.flows:
        return Reason.KEPT, ""
    if in_handover:
        return Reason.HANDOVER_STARTED, f"BID {', '.join(map(str, in_handover))} in handover"
    if lost:
        return Reason.REQUIREMENT_VIOLATED, f"BID {', '.join(map(str, lost))} excluded"
    if returning:
        return Reason.HANDOVER_COMPLETED, f"BID {', '.join(map(str, returning))} back"
    if not previous.flows:
        return Reason.INITIAL, ""
    joined = ", ".join(str(b) for b in sorted(joining))
    return Reason.REBALANCED, f"BID {joined} joined after the dwell time" if joined else ""
