"""Load sharing and load balancing over time: a stable set of member links, flows spread over
it by weight (load sharing: whole selectors per link; load balancing: every selector's policy
a weighted balance over the members, each flow pinned by the PREM's hash).

A link leaves the member set at once when it stops being eligible and joins after being
eligible for the dwell time (at once when it returns from a handover, or when no link is a
member yet). Flows a handover took away return to their link when it completes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.nsa.core.config import ApplicationProfile
from services.nsa.core.explain import Reason
from services.nsa.core.inputs import BindingStatus
from services.nsa.core.stability import WITHDRAWN, Context, Outcome, still_awaiting
from services.nsa.core.state import ClassState
from services.nsa.core.steering import Candidate, apportion, share_flows, share_weight


@dataclass(frozen=True, slots=True)
class _Members:
    """The links sharing a class after one step, and how the set changed."""

    members: tuple[int, ...]
    since: dict[int, float]
    awaiting: tuple[int, ...]
    lost: list[int]
    in_handover: list[int]
    returning: list[int]
    joining: set[int]


def _members(ranked: tuple[Candidate, ...], previous: ClassState, ctx: Context) -> _Members:
    """Keep the member set stable: leave at once, join after the dwell time (at once when
    back from a handover, or when no link is a member yet)."""
    view, settings, now = ctx.view, ctx.settings, ctx.now
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
    return _Members(members, since, awaiting, lost, in_handover, returning, joining)


def choose_shared(
    profile: ApplicationProfile,
    ranked: tuple[Candidate, ...],
    previous: ClassState,
    ctx: Context,
) -> Outcome:
    """Load sharing: keep the member set stable, then spread the flows over it by weight."""
    count = ctx.count
    by_bid = {c.bid: c for c in ranked}
    found = _members(ranked, previous, ctx)
    members, since, awaiting = found.members, found.since, found.awaiting
    lost, in_handover, returning = found.lost, found.in_handover, found.returning
    if not members:
        return _withdrawn(previous, found)
    displaced = _displaced(previous, in_handover)
    old: list[int | None] = [*previous.flows[:count], *([None] * (count - len(previous.flows)))]
    for bid in returning:  # the flows a handover took away go back to their link first
        for index in displaced.get(bid, ()):
            if index < count:
                old[index] = bid
    weights = {b: share_weight(profile.shares, b, by_bid[b].technology) for b in members}
    flows = share_flows(old, apportion(count, weights))
    reason, detail = _shared_reason(
        previous,
        flows == previous.flows,
        lost=lost,
        in_handover=in_handover,
        returning=returning,
        joining=found.joining,
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


def choose_balanced(
    profile: ApplicationProfile,
    ranked: tuple[Candidate, ...],
    previous: ClassState,
    ctx: Context,
) -> Outcome:
    """Load balancing: the same stable member set as load sharing, but every flow's policy
    balances over all members by the configured weights (the PREM pins each flow by a hash
    of its 5-tuple). One member: a plain forward (a version-1 policy).

    The class's `flows` name its heaviest member (ties: the lower BID), so views that show one
    BID per class show the link most of its flows take. A join waits out the dwell time as in
    load sharing: a new share changes the hash map and so moves some flows.
    """
    by_bid = {c.bid: c for c in ranked}
    found = _members(ranked, previous, ctx)
    if not found.members:
        return _withdrawn(previous, found)
    weights = {b: share_weight(profile.shares, b, by_bid[b].technology) for b in found.members}
    balance = bucket_weights(weights) if len(found.members) > 1 else ()
    primary = min(weights, key=lambda b: (-weights[b], b))
    flows = (primary,) * ctx.count
    reason, detail = _shared_reason(
        previous,
        balance == previous.balance and flows == previous.flows,
        lost=found.lost,
        in_handover=found.in_handover,
        returning=found.returning,
        joining=found.joining,
    )
    return Outcome(
        flows=flows,
        reason=reason,
        detail=detail,
        awaiting=found.awaiting,
        members=found.members,
        eligible_since=found.since,
        balance=balance,
    )


def bucket_weights(weights: dict[int, float]) -> tuple[tuple[int, int], ...]:
    """Configured weights as the integer bucket counts of a balance action, in BID order.

    The fewest buckets that keep every ratio within 1 %: the heaviest link gets the smallest
    count (at most 100) that does, the others their weight's share of it (at least one).
    3:1:1 stays 3:1:1, 0.7:0.3 becomes 7:3, 1:0.333 becomes 3:1.
    """
    top = max(weights.values())
    ratios = {b: w / top for b, w in weights.items()}
    for scale in range(1, _MAX_BUCKETS + 1):
        counts = {b: max(1, round(r * scale)) for b, r in ratios.items()}
        if all(abs(counts[b] - r * scale) <= _BUCKET_ERROR * r * scale for b, r in ratios.items()):
            break
    return tuple((b, counts[b]) for b in sorted(counts))


#: Bucket counts: the heaviest share gets at most this many, and every ratio is kept within
#: this relative error when fewer suffice.
_MAX_BUCKETS = 100
_BUCKET_ERROR = 0.01


def _withdrawn(previous: ClassState, found: _Members) -> Outcome:
    detail = "; ".join(f"BID {b} excluded" for b in found.lost)
    displaced = _displaced(previous, found.in_handover)
    return Outcome(
        flows=(),
        reason=Reason.NO_ELIGIBLE_LINK,
        detail=f"{detail + '; ' if detail else ''}{WITHDRAWN}",
        awaiting=found.awaiting,
        eligible_since=found.since,
        displaced={b: v for b, v in displaced.items() if b in found.awaiting},
    )


def _displaced(previous: ClassState, in_handover: Sequence[int]) -> dict[int, tuple[int, ...]]:
    """Which flows each link in handover held, so that they return to it afterwards."""
    displaced = dict(previous.displaced)
    for bid in in_handover:
        displaced[bid] = tuple(i for i, f in enumerate(previous.flows) if f == bid)
    return displaced


def _shared_reason(
    previous: ClassState,
    same: bool,
    *,
    lost: Sequence[int],
    in_handover: Sequence[int],
    returning: Sequence[int],
    joining: set[int],
) -> tuple[Reason, str]:
    if same:
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
