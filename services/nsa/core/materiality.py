"""When a metrics message cannot change a decision, so the NSA need not decide again.

Monitors report every link every period, and most reports move nothing: the same links stay
eligible and rank the same way. Deciding anyway costs about 0.4 ms per router in pure Python,
which at thousands of routers x links per second is more than a core. After each decision we
therefore record a `Tolerance`: how far each link's metrics may move before a new decision
could differ. A report inside it is applied to the view (so the next decision sees it) but not
decided on. This is exact, not a heuristic: inside the tolerance `decide` would return the
same state, and a property test checks that against the real `decide`.

Why it holds (see `decide`, `eligibility`, `steering`, `scoring`). A new state needs one of:

- a changed eligibility verdict of some class for the link. Metric rules are thresholds on
  one value each (bit rate >= min, RTT/jitter/loss <= max, cost <= cap) and an unknown value
  fails them; every threshold's verdict is compared for the reference and the new value.
  A staleness rule (max_metrics_age_s) only changes by time, which timers cover; a link that
  was stale at the decision is never inside the tolerance.
- a changed ranking or "beats by the margin" test among the eligible links. Scores use the
  ratio-normalised cost, RTT and bit rate (x / max, min / x) with weights summing to one, and
  security, which metrics do not change. If every such value of every link stays within a
  factor f of its value at the decision (zero stays zero, unknown stays unknown), each ratio
  moves by at most a factor f^2, so each score and each single-attribute merit by at most
  eta = f^2 - 1. A comparison with a gap g (between two merits, or between a merit difference
  and the margin) cannot flip while 2 * eta < g. So f is chosen from the smallest such gap of
  the decision (its `slack`); a tie (gap 0) leaves no room: any change is decided on.
  TOPSIS's vector normalisation has no such simple bound: a TOPSIS score comparison leaves no
  room either. Load sharing uses no scores at all, only the eligible set.
- a protected class's link crossing `risk_fraction` of a bound (`protection`): one more
  threshold per watched metric, a minimum test (value >= fraction x bound). Redundant steering
  fills its copy links from the ranking, so all its comparisons count; load balancing, like
  load sharing, uses the eligible set alone.
- a bulk class's link crossing `bulk_budget_share` of its data budget: one more maximum
  test, on used / budget.
- a dwell or protection hold time running out: not a metrics matter; `wake_at` timers
  decide then. A report
  that arrives once the decision's wake time is (nearly) due is decided on, not admitted.

Values the decision does not use (jitter and loss without a rule, rx/tx rates, signal, noise)
never make a report material.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from services.contracts.messages import LinkMetrics
from services.nsa.core.config import (
    ORDERED_MODES,
    NsaConfig,
    Protect,
    ScoringMethod,
    SteeringMode,
)
from services.nsa.core.decide import WAKE_SLACK_S, Decision
from services.nsa.core.explain import ClassExplanation, LinkVerdict
from services.nsa.core.inputs import Link, MrView
from services.nsa.core.state import ClassState
from services.nsa.core.steering import priority_rank

#: The link values the scores are computed from (`steering.attribute_columns`).
SCORED = ("cost_per_mb", "rtt_ms", "bitrate_bps")
_TIE = 1e-9  # the core rounds merits and scores to 9 decimals before comparing
_SAFETY = 1.25  # f is chosen for 2.5 * eta < slack, not 2 * eta: room for float rounding

Bound = tuple[float, bool]  # (threshold, True for a maximum / False for a minimum)


@dataclass(frozen=True, slots=True)
class Tolerance:
    """How far each link's metrics may move, after one decision, without changing it."""

    at: float
    until: float  # the decision's wake time, less the slack: a dwell may be over after it
    factor: float
    references: Mapping[int, Link]
    thresholds: Mapping[str, tuple[Bound, ...]]
    max_age_s: float | None

    def admits(self, metrics: LinkMetrics, now: float, last_update: float | None) -> bool:
        """Whether deciding again after `metrics` would change nothing; `last_update` is when
        the link's previous report arrived (None: the link is new)."""
        ref = self.references.get(metrics.bid)
        if now >= self.until or ref is None or last_update is None:
            return False
        if ref.technology != metrics.technology:
            return False
        if self.max_age_s is not None and (
            ref.updated_at is None
            or self.at - ref.updated_at > self.max_age_s
            or now - last_update > self.max_age_s
        ):
            return False
        for name in SCORED:
            if not _within(getattr(ref, name), getattr(metrics, name), self.factor):
                return False
        for name, bounds in self.thresholds.items():
            old, new = _metric(ref, name), _metric(metrics, name)
            for bound, is_max in bounds:
                if _passes(old, bound, is_max) != _passes(new, bound, is_max):
                    return False
        return True


def tolerance(view: MrView, config: NsaConfig, decision: Decision, now: float) -> Tolerance:
    """The tolerance of `decision`, taken from `view` at `now`."""
    profiles = {p.name: p for p in config.profiles_for(view.mobile_router)}
    slack = math.inf
    for entry in decision.explanation.classes:
        profile = profiles.get(entry.class_name)
        order = profile.order if profile is not None else ()
        held = decision.state.classes.get(entry.class_name)
        slack = min(slack, _slack(entry, order, config.settings.margin, view, held))
    wake_at = decision.wake_at
    return Tolerance(
        at=now,
        until=math.inf if wake_at is None else wake_at - 2 * WAKE_SLACK_S,
        factor=_factor(slack),
        references=dict(view.links),
        thresholds=_cached_thresholds(config, view.mobile_router),
        max_age_s=config.settings.max_metrics_age_s,
    )


def _slack(
    entry: ClassExplanation,
    order: tuple[int | str, ...],
    margin: float,
    view: MrView,
    held: ClassState | None,
) -> float:
    """The smallest gap of the comparisons the class's next decision rests on (0: any score
    change may matter).

    With a current link and no handover pending, a single-link class's next state only
    depends on whether some link beats the current one by the margin, and if one does, on
    which link is the best: those comparisons alone count. Otherwise every comparison of the
    ranking does.
    """
    eligible = [v for v in entry.links if v.eligible and v.score is not None]
    if entry.steering in _NO_SCORES or not eligible:
        return math.inf
    current = None
    if held is not None and not held.awaiting and held.current in {v.bid for v in eligible}:
        current = held.current
    if entry.steering in ORDERED_MODES:
        # Overflow tiers follow the whole ranking: every tie between links of one rank counts.
        held_link = current if entry.steering is SteeringMode.PRIORITY else None
        return _priority_slack(entry, eligible, order, held_link)
    if entry.steering is SteeringMode.BEST and entry.method is ScoringMethod.TOPSIS:
        return 0.0 if len(eligible) > 1 else math.inf
    if entry.steering is SteeringMode.REDUNDANT and entry.method is ScoringMethod.TOPSIS:
        return 0.0 if len(eligible) > 1 else math.inf
    ranking = _Ranking.of(entry, eligible, view)
    if current is None or entry.steering is SteeringMode.REDUNDANT:
        # Redundant: the copy links are filled from the ranking, so all of it counts.
        return ranking.all_pairs(margin)
    return ranking.against(current, margin)


@dataclass(frozen=True, slots=True)
class _Ranking:
    """Merits and scores of a class's eligible links, best first as the core sorts them."""

    merits: dict[int, float]
    scores: dict[int, float]
    values: dict[int, float | None]  # the single attribute of the merit (delay or cost)
    single: bool
    topsis: bool

    @classmethod
    def of(cls, entry: ClassExplanation, eligible: list[LinkVerdict], view: MrView) -> _Ranking:
        """The ranking an explanation records for `eligible`."""
        attribute = _SINGLE.get(entry.steering)
        return cls(
            merits={v.bid: v.merit or 0.0 for v in eligible},
            scores={v.bid: v.score or 0.0 for v in eligible},
            values={
                v.bid: None if attribute is None else _value(view, v.bid, attribute)
                for v in eligible
            },
            single=attribute is not None,
            topsis=entry.method is ScoringMethod.TOPSIS,
        )

    def gap(self, a: int, b: int) -> float:
        """How far apart a and b are in the order (0: they may swap at any change)."""
        merit_gap = abs(self.merits[a] - self.merits[b])
        if merit_gap > _TIE:
            return merit_gap
        column = list(self.values.values())
        if (
            not self.single
            or self.topsis
            or not _stable_tie(self.values[a], self.values[b], column)
        ):
            return 0.0
        return abs(self.scores[a] - self.scores[b])  # a stable merit tie: the score decides

    def best(self) -> int:
        """The link the core ranks first: highest merit, then score, then lowest BID."""
        return min(
            self.merits, key=lambda b: (-round(self.merits[b], 9), -round(self.scores[b], 9), b)
        )

    def all_pairs(self, margin: float) -> float:
        """Every comparison of the ranking, and every link's margin test against the best."""
        bids = list(self.merits)
        gaps = [self.gap(a, b) for i, a in enumerate(bids) for b in bids[i + 1 :]]
        top = self.merits[self.best()]
        margins = [abs(top - m - margin) for m in self.merits.values() if top - m > _TIE]
        return min([*gaps, *margins], default=math.inf)

    def against(self, current: int, margin: float) -> float:
        """The class stays on `current`: does anything beat it, and if so, which is best?"""
        held = self.merits[current]
        best = self.best()
        top = self.merits[best]
        if top - held <= margin + _TIE:  # nothing beats the current link
            return min(
                (margin - (m - held) for b, m in self.merits.items() if b != current),
                default=math.inf,
            )
        others = [self.gap(best, b) for b in self.merits if b != best]
        return min([top - held - margin, *others])


#: Steering modes whose decision uses the eligible set alone, not the scores.
_NO_SCORES = frozenset({SteeringMode.LOAD_SHARING, SteeringMode.LOAD_BALANCING})

#: The single attribute a steering mode's merit is computed from.
_SINGLE = {SteeringMode.LOWEST_DELAY: "rtt_ms", SteeringMode.CHEAPEST: "cost_per_mb"}


def _value(view: MrView, bid: int, attribute: str) -> float | None:
    link = view.links.get(bid)
    value: float | None = None if link is None else getattr(link, attribute)
    return value


def _stable_tie(a: float | None, b: float | None, column: list[float | None]) -> bool:
    """Whether two equal single-attribute merits stay equal inside the tolerance.

    Merits are min / x over the eligible links, unknown values counting as the worst. They
    stay equal while None stays None and zero stays zero if they come from exact zeros: both
    unknown, both zero (merit 1), or both positive against a zero minimum (merit 0).
    Two equal positive values could drift apart.
    """
    known = [v for v in column if v is not None]
    if not known:
        return True  # an unused column: every merit is 1
    worst = max(known)
    x = worst if a is None else a
    y = worst if b is None else b
    if a is None and b is None:
        return True
    if min(known) == 0:
        return (x == 0) == (y == 0)
    return False


def _priority_slack(
    entry: ClassExplanation,
    eligible: list[LinkVerdict],
    order: tuple[int | str, ...],
    current: int | None,
) -> float:
    """Ranks do not move with metrics; the score breaks ties between links of equal rank.

    Staying on `current`, only the best of the links ranked before it matters (the one the
    class would wait for); without one, every tie does."""
    ranks = {v.bid: priority_rank(order, v.bid, v.technology) for v in eligible}
    scores = {v.bid: v.score or 0.0 for v in eligible}
    bids = list(ranks)
    if current is not None:
        first = min(ranks.values())
        if first >= ranks[current]:
            return math.inf  # nothing ranks before the current link
        bids = [b for b in bids if ranks[b] == first]
    ties = [
        abs(scores[a] - scores[b])
        for i, a in enumerate(bids)
        for b in bids[i + 1 :]
        if ranks[a] == ranks[b]
    ]
    if ties and entry.method is ScoringMethod.TOPSIS:
        return 0.0
    return min(ties, default=math.inf)


def _factor(slack: float) -> float:
    """The largest drift factor f with 2.5 * (f^2 - 1) below `slack`."""
    if slack <= _TIE:
        return 1.0
    if math.isinf(slack):
        return math.inf
    return math.sqrt(1.0 + slack / (2 * _SAFETY))


#: Thresholds per (configuration, router): configurations are frozen and shared by the
#: routers without preferences of their own, so this is computed once per configuration
#: rather than at every decision. Keyed by identity (the models hold dicts: unhashable); the
#: configuration is kept in the value, so its id cannot be reused while cached.
_THRESHOLDS: dict[tuple[int, str], tuple[NsaConfig, dict[str, tuple[Bound, ...]]]] = {}
_THRESHOLDS_MAX = 8192


def _cached_thresholds(config: NsaConfig, mobile_router: str) -> dict[str, tuple[Bound, ...]]:
    key = (id(config), mobile_router)
    found = _THRESHOLDS.get(key)
    if found is not None and found[0] is config:
        return found[1]
    if len(_THRESHOLDS) >= _THRESHOLDS_MAX:
        _THRESHOLDS.clear()
    thresholds = _thresholds(config, mobile_router)
    _THRESHOLDS[key] = (config, thresholds)
    return thresholds


def _thresholds(config: NsaConfig, mobile_router: str) -> dict[str, tuple[Bound, ...]]:
    """Every metric threshold an eligibility rule applies to this router's links."""
    found: dict[str, set[Bound]] = {}
    for profile in config.profiles_for(mobile_router):
        need = profile.requirements
        cap = config.rules.rule_for(profile.name).max_cost_per_mb
        for name, bound, is_max in (
            ("bitrate_bps", need.min_bandwidth_bps, False),
            ("rtt_ms", need.max_delay_ms, True),
            ("jitter_ms", need.max_jitter_ms, True),
            ("loss", need.max_loss, True),
            ("cost_per_mb", cap, True),
        ):
            if bound is not None:
                found.setdefault(name, set()).add((bound, is_max))
        if profile.bulk:
            found.setdefault(BUDGET_SHARE, set()).add((config.settings.bulk_budget_share, True))
        if profile.protect is Protect.WHEN_AT_RISK:
            # At risk from a fraction of a bound (value >= fraction x bound): a minimum test.
            for name, bound in (
                ("rtt_ms", need.max_delay_ms),
                ("jitter_ms", need.max_jitter_ms),
                ("loss", need.max_loss),
            ):
                if bound is not None:
                    found.setdefault(name, set()).add((profile.risk_fraction * bound, False))
    return {name: tuple(sorted(bounds)) for name, bounds in found.items()}


#: The used share of a link's data budget: a bulk class's threshold (not a report's field).
BUDGET_SHARE = "budget_share"


def _metric(source: Link | LinkMetrics, name: str) -> float | None:
    if name != BUDGET_SHARE:
        value: float | None = getattr(source, name)
        return value
    if source.budget_bytes is None or source.budget_used_bytes is None:
        return None
    return source.budget_used_bytes / source.budget_bytes


def _within(old: float | None, new: float | None, factor: float) -> bool:
    if old is None or new is None:
        return old is new
    if old == new:
        return True
    if old <= 0 or new <= 0:
        return False  # zero stays zero: a ratio against zero is not bounded
    return old / factor <= new <= old * factor


def _passes(value: float | None, bound: float, is_max: bool) -> bool:
    if value is None:
        return False
    return value <= bound if is_max else value >= bound
