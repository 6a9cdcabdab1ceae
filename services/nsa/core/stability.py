"""Single-link steering over time: forced moves first, then the margin-and-dwell rule.

A class leaves its link at once when the link stops being eligible (down, unbound, failing a
rule) or starts a handover, remembering a link left for a handover and returning to it at
once when the handover completes. A link the class left because it went down and that then
starts a handover is remembered the same way: in a real handover the old access network is
lost (carrier gone) before the new one's Binding Update announces the handover, so the outage
was the handover's first sign. Otherwise a challenger must beat the current link by more
than the margin, continuously for the dwell time; the challenger and since when are kept in
the class state, so each call decides from the state alone and repeated calls agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from services.nsa.core.config import ORDERED_MODES, NsaSettings, SteeringMode
from services.nsa.core.eligibility import Rule, Violation
from services.nsa.core.explain import Reason
from services.nsa.core.inputs import BindingStatus, MrView
from services.nsa.core.state import ClassState
from services.nsa.core.steering import Candidate, beats

WITHDRAWN = "no eligible link: no policies, traffic takes the default path"


@dataclass(frozen=True, slots=True)
class Context:
    """What every class decision of one step shares, plus the class's selector count."""

    view: MrView
    settings: NsaSettings
    now: float
    count: int
    why: Mapping[int, tuple[Violation, ...]]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one class's step decided, before it becomes the class's next state."""

    flows: tuple[int, ...]
    reason: Reason
    detail: str = ""
    challenger: int | None = None
    challenger_since: float | None = None
    awaiting: tuple[int, ...] = ()
    went_down: tuple[int, float] | None = None
    members: tuple[int, ...] = ()
    eligible_since: dict[int, float] | None = None
    displaced: dict[int, tuple[int, ...]] | None = None
    balance: tuple[tuple[int, int], ...] = ()
    copies: tuple[int, ...] = ()
    tiers: tuple[tuple[int, int | None], ...] = ()
    protected_since: float | None = None
    healthy_since: float | None = None


def choose_single(
    mode: SteeringMode,
    ranked: tuple[Candidate, ...],
    previous: ClassState,
    ctx: Context,
) -> Outcome:
    """Single-link modes: forced moves first, then the margin-and-dwell rule."""
    view, settings, now, count = ctx.view, ctx.settings, ctx.now, ctx.count
    by_bid = {c.bid: c for c in ranked}
    current = previous.current
    awaiting = still_awaiting(_awaited(previous, view), view, by_bid)
    target, reason, detail, awaiting = _forced_target(current, ranked, awaiting, view, ctx.why)
    awaiting = tuple(b for b in awaiting if b != target)
    went_down = _went_down(previous, awaiting, by_bid, ctx.why, now)
    if target is None:
        return Outcome(
            flows=(),
            reason=Reason.NO_ELIGIBLE_LINK,
            detail=f"{detail + '; ' if detail else ''}{WITHDRAWN}",
            awaiting=awaiting,
            went_down=went_down,
        )
    best = ranked[0]
    if best.bid == target or not beats(mode, best, by_bid[target], settings.margin):
        return Outcome(
            flows=(target,) * count,
            reason=reason,
            detail=detail,
            awaiting=awaiting,
            went_down=went_down,
        )
    kept_challenger = previous.challenger == best.bid and target == current
    since = previous.challenger_since if kept_challenger else None
    since = now if since is None else since
    edge = _advantage(mode, best, by_bid[target])
    if now - since >= settings.dwell_s:
        return Outcome(
            flows=(best.bid,) * count,
            reason=Reason.DWELL_ELAPSED,
            detail=f"{edge} for {now - since:g} s (dwell {settings.dwell_s:g} s)",
            awaiting=awaiting,
            went_down=went_down,
        )
    pending = Reason.CHALLENGER_PENDING if reason is Reason.KEPT else reason
    return Outcome(
        flows=(target,) * count,
        reason=pending,
        detail=f"{detail + '; ' if detail else ''}{edge} for {now - since:g} of "
        f"{settings.dwell_s:g} s",
        challenger=best.bid,
        challenger_since=since,
        awaiting=awaiting,
        went_down=went_down,
    )


def _forced_target(
    current: int | None,
    ranked: tuple[Candidate, ...],
    awaiting: tuple[int, ...],
    view: MrView,
    why: Mapping[int, tuple[Violation, ...]],
) -> tuple[int | None, Reason, str, tuple[int, ...]]:
    """The link the class must use before any comparison: (target, reason, detail, awaiting).

    Leaving an excluded current link, returning from a handover, or a first assignment; else
    the current link, reason KEPT.
    """
    eligible = {c.bid for c in ranked}
    first = ranked[0].bid if ranked else None
    back = next((c.bid for c in ranked if c.bid in awaiting), None)
    if current is not None and current not in eligible:
        if view.binding_status(current) is BindingStatus.HANDOVER:
            awaiting = (*awaiting, current) if current not in awaiting else awaiting
            detail = f"BID {current} started a handover"
            return (back or first), Reason.HANDOVER_STARTED, detail, awaiting
        detail = f"BID {current} excluded: {_rules(why.get(current, ()))}"
        return (back or first), Reason.REQUIREMENT_VIOLATED, detail, awaiting
    if back is not None and back != current:
        return back, Reason.HANDOVER_COMPLETED, f"BID {back} completed its handover", awaiting
    if current is None:
        return first, Reason.INITIAL, "", awaiting
    return current, Reason.KEPT, "", awaiting


def _awaited(previous: ClassState, view: MrView) -> tuple[int, ...]:
    """The links left for a handover, and the link left when it went down if a handover of
    that link started since (seen as a status, or only as its time when the handover started
    and completed between two decisions)."""
    if previous.went_down is None:
        return previous.awaiting
    bid, left_at = previous.went_down
    binding = view.bindings.get(bid)
    started = None if binding is None else binding.handover_at
    if bid in previous.awaiting or started is None or started < left_at:
        return previous.awaiting
    return (*previous.awaiting, bid)


def _went_down(
    previous: ClassState,
    awaiting: tuple[int, ...],
    eligible: dict[int, Candidate],
    why: Mapping[int, tuple[Violation, ...]],
    now: float,
) -> tuple[int, float] | None:
    """The link the class left because it went down, and when, until that link is awaited
    (its handover started), eligible again (back by the ordinary rules) or replaced."""
    current = previous.current
    down = current is not None and any(v.rule is Rule.LINK_DOWN for v in why.get(current, ()))
    if current is not None and down and current not in eligible:
        return (current, now)
    lost = previous.went_down
    if lost is None or lost[0] in awaiting or lost[0] in eligible:
        return None
    return lost


def still_awaiting(
    awaiting: Sequence[int], view: MrView, eligible: dict[int, Candidate]
) -> tuple[int, ...]:
    """Links left for a handover that may still come back: in handover, or back and eligible.

    A link whose binding is gone, or that is live again but no longer eligible, is forgotten
    (the class then follows the ordinary rules).
    """
    kept: list[int] = []
    for bid in awaiting:
        status = view.binding_status(bid)
        if bid not in kept and (status is BindingStatus.HANDOVER or bid in eligible):
            kept.append(bid)
    return tuple(kept)


def _advantage(mode: SteeringMode, best: Candidate, current: Candidate) -> str:
    if mode in ORDERED_MODES:
        return f"BID {best.bid} ranks before BID {current.bid}"
    return f"BID {best.bid} beats BID {current.bid} by {best.merit - current.merit:.3f}"


def _rules(broken: tuple[Violation, ...]) -> str:
    if not broken:
        return "no longer known"
    return "; ".join(f"{v.rule.value} ({v.detail})" for v in broken)
