"""Steering modes: how a class orders its eligible links, and how load sharing spreads flows.

Every mode reduces to a ranking of candidates plus a "beats" test used by the stability rule:
best score, smallest delay and cheapest compare a merit in [0, 1] (the score, or the ratio-
normalised delay or cost alone) against the margin; priority (active-standby) and
priority-overflow compare the position in the configured order. Ties fall to the higher
overall score, then the lower BID, so the same inputs always give the same choice.

Load sharing spreads flows, not packets: each selector of the class is one flow unit. The
number of flows per link is apportioned by weight (largest remainder), and flows stay where
they are while their link's quota allows, so repeated decisions do not reshuffle and a change
moves as few flows as the new quotas require.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from services.nsa.core.config import (
    ORDERED_MODES,
    ApplicationProfile,
    ScoringMethod,
    Share,
    SteeringMode,
    Weights,
    ref_matches,
)
from services.nsa.core.inputs import Link
from services.nsa.core.scoring import Column, topsis, utility

_EPSILON = 1e-9  # score differences below this are float noise, not a better link


@dataclass(frozen=True, slots=True)
class Candidate:
    """An eligible link as its class sees it."""

    bid: int
    technology: str
    score: float  # by the class's scoring method, over the eligible links
    merit: float  # what the steering mode compares (the score, or delay or cost alone)
    rank: int  # priority mode: position in the order (unlisted: after all); else 0


def rank_candidates(
    profile: ApplicationProfile,
    method: ScoringMethod,
    weights: Weights,
    links: Sequence[Link],
    security: Sequence[int],
) -> tuple[Candidate, ...]:
    """The eligible `links` scored and ordered best first for the class's steering mode."""
    count = len(links)
    if count == 0:
        return ()
    columns = attribute_columns(links, security, weights)
    scores = (topsis if method is ScoringMethod.TOPSIS else utility)(columns, count)
    merits = _merits(profile.steering, links, security, scores)
    found = [
        Candidate(
            bid=link.bid,
            technology=link.technology or "",
            score=scores[i],
            merit=merits[i],
            rank=priority_rank(profile.order, link.bid, link.technology),
        )
        for i, link in enumerate(links)
    ]
    if profile.steering in ORDERED_MODES:
        found.sort(key=lambda c: (c.rank, -round(c.score, 9), c.bid))
    else:
        found.sort(key=lambda c: (-round(c.merit, 9), -round(c.score, 9), c.bid))
    return tuple(found)


def attribute_columns(
    links: Sequence[Link], security: Sequence[int], weights: Weights
) -> list[Column]:
    """The four attributes the user weighs: cost per MB, delay (RTT), bandwidth, security.

    Bandwidth is the link's bit rate, not what is left after current traffic: the class's own
    traffic counts in the throughput, and subtracting it would push a class off its own link.
    """
    return [
        Column(tuple(x.cost_per_mb for x in links), weights.cost, benefit=False),
        Column(tuple(x.rtt_ms for x in links), weights.delay, benefit=False),
        Column(tuple(x.bitrate_bps for x in links), weights.bandwidth, benefit=True),
        Column(tuple(float(s) for s in security), weights.security, benefit=True),
    ]


#: The weights of the single-attribute modes (made once: a model is validated when built).
_DELAY_ONLY = Weights(cost=0, delay=1, bandwidth=0, security=0)
_COST_ONLY = Weights(cost=1, delay=0, bandwidth=0, security=0)


def _merits(
    mode: SteeringMode, links: Sequence[Link], security: Sequence[int], scores: tuple[float, ...]
) -> tuple[float, ...]:
    if mode is SteeringMode.LOWEST_DELAY:
        only = _DELAY_ONLY
    elif mode is SteeringMode.CHEAPEST:
        only = _COST_ONLY
    else:
        return scores
    return utility(attribute_columns(links, security, only), len(links))


def beats(mode: SteeringMode, challenger: Candidate, current: Candidate, margin: float) -> bool:
    """Whether `challenger` is better than `current` by enough to move a class to it."""
    if mode in ORDERED_MODES:
        return challenger.rank < current.rank
    return challenger.merit - current.merit > margin + _EPSILON


def priority_rank(order: Sequence[int | str], bid: int, technology: str | None) -> int:
    """Position of the first entry of `order` naming the link; unlisted links come last."""
    for index, ref in enumerate(order):
        if ref_matches(ref, bid, technology):
            return index
    return len(order)


def share_weight(shares: Sequence[Share], bid: int, technology: str) -> float:
    """The link's load-sharing weight: its BID's entry, else its technology's, else 1.0."""
    for share in shares:
        if share.link == bid:
            return share.weight
    for share in shares:
        if isinstance(share.link, str) and share.link == technology:
            return share.weight
    return 1.0


def apportion(count: int, weights: Mapping[int, float]) -> dict[int, int]:
    """Split `count` flows over BIDs in proportion to `weights` (largest remainder method).

    Remainder ties go to the lower BID. The quotas always add up to `count`.
    """
    total = sum(weights.values())
    if not weights or total <= 0:
        return {}
    exact = {bid: count * w / total for bid, w in weights.items()}
    quotas = {bid: int(x) for bid, x in exact.items()}
    left = count - sum(quotas.values())
    by_remainder = sorted(exact, key=lambda b: (-round(exact[b] - quotas[b], 9), b))
    for bid in by_remainder[:left]:
        quotas[bid] += 1
    return quotas


def share_flows(previous: Sequence[int | None], quotas: Mapping[int, int]) -> tuple[int, ...]:
    """Assign each flow a BID within `quotas`, keeping flows on their BID where possible.

    First every flow keeps its previous BID while that BID has quota left (in flow order);
    then each remaining flow goes to the BID with the most quota left (ties: lower BID).
    """
    left = dict(quotas)
    chosen: list[int | None] = []
    for bid in previous:
        if bid is not None and left.get(bid, 0) > 0:
            left[bid] -= 1
            chosen.append(bid)
        else:
            chosen.append(None)
    result = []
    for kept in chosen:
        bid = kept if kept is not None else min(left, key=lambda b: (-left[b], b))
        if kept is None:
            left[bid] -= 1
        result.append(bid)
    return tuple(result)
