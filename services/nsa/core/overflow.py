"""Priority-overflow steering: fill the preferred link up to its capacity, then the next.

The preferred link is chosen as in priority (active-standby) steering: the first eligible
link of `order`, with the same stability rule (`stability.choose_single`). The class's tiers
are that link, then the other eligible links in the order's ranking, each with the capacity
configured for it (by BID, else by technology). The first link without a capacity is the
last tier and takes whatever overflows; so is the eighth (`MAX_ACTION_BIDS`).

Whether a link is saturated is measured where the packets are: the PREM meters the class
on each tier and starts new flows on the next tier while it is over the capacity, and never
moves a running flow (`prem.core.nft_render.priority_chain_commands`). So the NSA needs no
per-class rates, and a change of load changes no decision: the tiers change only when
eligibility or the order's ranking does. That is what keeps this mode from flapping, where
an NSA deciding overflow from interface counters could not tell whether the class would fit
back (see docs/architecture.md, "Steering modes").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from services.contracts.policy import MAX_ACTION_BIDS
from services.nsa.core.config import ApplicationProfile, Capacity
from services.nsa.core.stability import Outcome
from services.nsa.core.steering import Candidate

#: (BID, capacity in bits per second) per tier in order; the last tier has None.
Tiers = tuple[tuple[int, int | None], ...]


def capacity_of(capacities: Sequence[Capacity], bid: int, technology: str) -> float | None:
    """The link's configured capacity: its BID's entry, else its technology's, else None."""
    for entry in capacities:
        if entry.link == bid:
            return entry.bps
    for entry in capacities:
        if isinstance(entry.link, str) and entry.link == technology:
            return entry.bps
    return None


def tiers_for(
    profile: ApplicationProfile, preferred: int, ranked: Sequence[Candidate]
) -> tuple[Tiers, dict[int, str]]:
    """The tiers of a class whose preferred link is `preferred`, and each tier's technology."""
    by_bid = {c.bid: c for c in ranked}
    chain = [preferred, *(c.bid for c in ranked if c.bid != preferred)][:MAX_ACTION_BIDS]
    technology = {bid: by_bid[bid].technology if bid in by_bid else "" for bid in chain}
    tiers: list[tuple[int, int | None]] = []
    for bid in chain:
        capacity = capacity_of(profile.capacities, bid, technology[bid])
        tiers.append((bid, None if capacity is None else int(capacity)))
        if capacity is None:
            break
    tiers[-1] = (tiers[-1][0], None)
    return tuple(tiers), technology


def with_tiers(
    profile: ApplicationProfile, outcome: Outcome, ranked: Sequence[Candidate]
) -> Outcome:
    """The single-link `outcome` with the class's tiers, and a detail that says which link is
    preferred, its capacity, and what overflows where."""
    if not outcome.flows:
        return outcome
    preferred = outcome.flows[0]
    tiers, technology = tiers_for(profile, preferred, ranked)
    name = f"BID {preferred}{_tech(technology[preferred])}"
    own = capacity_of(profile.capacities, preferred, technology[preferred])
    if len(tiers) > 1:
        first = f"preferred {name} up to {_rate(tiers[0][1])}"
        steps = [
            f"BID {bid}{_tech(technology[bid])}" + ("" if rate is None else f" up to {_rate(rate)}")
            for bid, rate in tiers[1:]
        ]
        why = f"{first}; new flows above it overflow to {', then to '.join(steps)}"
    elif own is None:
        why = f"preferred {name} has no capacity in `capacities`: it takes every flow"
    else:
        why = f"preferred {name} up to {_rate(int(own))}; no other eligible link to overflow to"
    detail = f"{why}; {outcome.detail}" if outcome.detail else why
    return replace(outcome, tiers=tiers if len(tiers) > 1 else (), detail=detail)


def _tech(technology: str) -> str:
    return f" ({technology})" if technology else ""


def _rate(bps: int | None) -> str:
    if bps is None:
        return "any rate"
    return f"{bps / 1e6:g} Mb/s" if bps >= 1_000_000 else f"{bps / 1e3:g} kb/s"
