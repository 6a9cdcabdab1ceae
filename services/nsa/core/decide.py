"""The decision step: which BID each class of one mobile router uses now, with hysteresis.

`decide` is a pure function of (view, configuration, previous state, now, trigger). Per class:
hard constraints first (`eligibility`), a score over the eligible links (`steering`), then the
stability rule:

- a class moves to a better link only when it beats the current one by more than the margin,
  continuously for the dwell time (the challenger and since when are kept in the state);
- it moves at once when its link is down, loses its binding or fails a hard rule;
- when its link starts a handover it moves at once to the best other link and remembers the
  link it left; when that handover completes (registered / coa-changed) it returns at once;
- with no eligible link its policies are withdrawn, so its traffic takes the default path
  (the routes outside our BID tables) rather than a link that breaks a rule or is gone.

Load sharing keeps the set of links sharing the class (`members`): a link leaves it at once
when it stops being eligible, and joins after being eligible for the dwell time (at once when
returning from a handover, or when no link is a member yet).

The rules over time live in `stability` (single-link modes) and `sharing` (load sharing);
this module assesses the links, dispatches, and assembles the state and the explanation.

The returned `wake_at` is when a pending dwell or a metrics age runs out: the service calls
`decide` again then (trigger TIMER) even if no message arrives.
"""

from __future__ import annotations

from services.contracts.errors import InvalidInput, Problem
from services.nsa.core.config import ORDERED_MODES, ApplicationProfile, NsaConfig, SteeringMode
from services.nsa.core.eligibility import FORBIDDING, violations
from services.nsa.core.explain import ClassExplanation, Explanation, LinkVerdict, single_bid
from services.nsa.core.frozen import Frozen
from services.nsa.core.inputs import MrView, Trigger
from services.nsa.core.overflow import with_tiers
from services.nsa.core.protection import protect, with_copies
from services.nsa.core.sharing import choose_balanced, choose_shared
from services.nsa.core.stability import Context, choose_single
from services.nsa.core.state import ClassState, MrState
from services.nsa.core.steering import Candidate, priority_rank, rank_candidates


class Decision(Frozen):
    """What one decision produced: the next state, why, and when to decide again."""

    state: MrState
    explanation: Explanation
    wake_at: float | None = None


def decide(
    view: MrView, config: NsaConfig, state: MrState, now: float, trigger: Trigger
) -> Decision:
    """Decide every class of `view.mobile_router`; see the module docstring for the rules."""
    if state.mobile_router != view.mobile_router:
        raise InvalidInput(
            [
                Problem(
                    f"state of {state.mobile_router!r}, view of {view.mobile_router!r}",
                    field="mobile_router",
                )
            ]
        )
    classes: dict[str, ClassState] = {}
    explained: list[ClassExplanation] = []
    for profile in config.profiles_for(view.mobile_router):
        previous = state.classes.get(profile.name, ClassState())
        classes[profile.name], entry = decide_class(view, config, profile, previous, now)
        explained.append(entry)
    # The records below are built from values already validated (the view, the state, the
    # configuration) by code typed to their fields: `model_construct` skips validating them
    # again, which was a fifth of a decision's cost.
    explanation = Explanation.model_construct(
        mobile_router=view.mobile_router, at=now, trigger=trigger, classes=tuple(explained)
    )
    new_state = MrState.model_construct(mobile_router=view.mobile_router, classes=classes)
    return Decision.model_construct(
        state=new_state,
        explanation=explanation,
        wake_at=_wake_at(view, config, classes, now),
    )


def decide_class(
    view: MrView,
    config: NsaConfig,
    profile: ApplicationProfile,
    previous: ClassState,
    now: float,
) -> tuple[ClassState, ClassExplanation]:
    """Decide one class: its next state and the explanation of the step."""
    verdicts, ranked = _assess(view, config, profile, now)
    why = {v.bid: v.excluded_by for v in verdicts}
    ctx = Context(view, config.settings, now, len(profile.selectors), why)
    if profile.steering is SteeringMode.LOAD_SHARING:
        outcome = choose_shared(profile, ranked, previous, ctx)
    elif profile.steering is SteeringMode.LOAD_BALANCING:
        outcome = choose_balanced(profile, ranked, previous, ctx)
    elif profile.steering is SteeringMode.PRIORITY_OVERFLOW:
        outcome = with_tiers(
            profile, choose_single(profile.steering, ranked, previous, ctx), ranked
        )
    elif profile.steering is SteeringMode.REDUNDANT:
        outcome = with_copies(
            profile, choose_single(profile.steering, ranked, previous, ctx), ranked, previous
        )
    else:
        outcome = protect(
            profile, choose_single(profile.steering, ranked, previous, ctx), ranked, previous, ctx
        )
    moved = outcome.flows != previous.flows
    new_state = ClassState.model_construct(
        flows=outcome.flows,
        fallbacks=_fallback_order(profile, verdicts),
        moved_at=now if moved else previous.moved_at,
        challenger=outcome.challenger,
        challenger_since=outcome.challenger_since,
        awaiting=outcome.awaiting,
        went_down=outcome.went_down,
        members=outcome.members,
        eligible_since=outcome.eligible_since or {},
        displaced=outcome.displaced or {},
        balance=outcome.balance,
        copies=outcome.copies,
        tiers=outcome.tiers,
        protected_since=outcome.protected_since,
        healthy_since=outcome.healthy_since,
    )
    entry = ClassExplanation.model_construct(
        class_name=profile.name,
        steering=profile.steering,
        method=config.method_for(profile),
        reason=outcome.reason,
        moved=moved,
        previous_bid=single_bid(previous.flows),
        chosen_bid=single_bid(outcome.flows),
        previous_flows=previous.flows,
        chosen_flows=outcome.flows,
        detail=outcome.detail,
        links=verdicts,
        chosen_shares=outcome.balance,
        chosen_copies=outcome.copies,
        chosen_tiers=outcome.tiers,
    )
    return new_state, entry


def _assess(
    view: MrView, config: NsaConfig, profile: ApplicationProfile, now: float
) -> tuple[tuple[LinkVerdict, ...], tuple[Candidate, ...]]:
    """Every known link's verdict for the class, and the eligible ones ranked best first."""
    found = {bid: violations(view, bid, profile, config, now) for bid in view.bids()}
    eligible = [view.links[bid] for bid, broken in found.items() if not broken]
    security = [
        config.rules.security_of(view.mobile_router, link.bid, link.technology or "")
        for link in eligible
    ]
    weights = config.weights_for(view.mobile_router, profile)
    ranked = rank_candidates(profile, config.method_for(profile), weights, eligible, security)
    by_bid = {c.bid: c for c in ranked}
    verdicts = []
    for bid, broken in found.items():
        link = view.links.get(bid)
        candidate = by_bid.get(bid)
        verdicts.append(
            LinkVerdict.model_construct(
                bid=bid,
                technology=None if link is None else link.technology,
                score=None if candidate is None else candidate.score,
                merit=None if candidate is None else candidate.merit,
                excluded_by=broken,
            )
        )
    return tuple(verdicts), ranked


def _fallback_order(
    profile: ApplicationProfile, verdicts: tuple[LinkVerdict, ...]
) -> tuple[int, ...]:
    """The BIDs a PREM may fall back to: every link the operator allows the class.

    Links that are down, unbound or failing a metric requirement stay in the list: the PREM
    skips unusable BIDs itself, and a list that followed every flap or metric would rewrite
    the class's policies each time. The order is stable for the same reason: the priority
    order, else ascending BID, never the scores.
    """
    allowed = [v for v in verdicts if not any(x.rule in FORBIDDING for x in v.excluded_by)]
    if profile.steering in ORDERED_MODES:
        allowed.sort(key=lambda v: (priority_rank(profile.order, v.bid, v.technology), v.bid))
    return tuple(v.bid for v in allowed)


#: Added to every wake time: a decision taken exactly at `since + dwell` can compute
#: `now - since` one rounding below the dwell, and one at `updated_at + max_age` finds the
#: metrics not yet older than the limit; either would leave the change to the next input.
#: Ten microseconds is well above the rounding of epoch times (~2e-7 s) and below any timer.
WAKE_SLACK_S = 1e-5


def _wake_at(
    view: MrView, config: NsaConfig, classes: dict[str, ClassState], now: float
) -> float | None:
    """The earliest future time at which a decision could change without new input."""
    settings = config.settings
    times: list[float] = []
    holding = {n: s.healthy_since for n, s in classes.items() if s.healthy_since is not None}
    if holding:  # protected classes whose link is healthy: their hold time runs out
        times += [
            holding[p.name] + p.protect_hold_s
            for p in config.profiles_for(view.mobile_router)
            if p.name in holding
        ]
    for state in classes.values():
        if state.challenger_since is not None:
            times.append(state.challenger_since + settings.dwell_s)
        for bid, since in state.eligible_since.items():
            if bid not in state.members:
                times.append(since + settings.dwell_s)
    if settings.max_metrics_age_s is not None:
        times += [
            link.updated_at + settings.max_metrics_age_s
            for link in view.links.values()
            if link.updated_at is not None
        ]
    future = [t + WAKE_SLACK_S for t in times if t + WAKE_SLACK_S > now]
    return min(future) if future else None
