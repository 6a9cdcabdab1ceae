"""Where the packets of a balance, duplicate or priority policy go, given which BIDs are usable
(pure).

Balance: a policy's weights become hash buckets (a share of weight w owns w buckets, after
dividing every weight by their greatest common divisor), in share order, so a flow's bucket is
`hash(5-tuple) mod N`. N never changes while any share is usable: the buckets of an unusable
share are handed to the usable ones (in contiguous runs, in proportion to their weights) and
every other bucket keeps its BID, so no flow of a usable BID moves when another BID fails.
When no share is usable the first usable fallback takes every flow (as a forward's fallback
would); when nothing at all is usable the layout is kept, so the flows return by themselves.

Duplicate: the original packet takes the first usable path, copies the other usable ones; an
unusable path is replaced by the next usable fallback, so the policy keeps as many copies as
it can. A path that is usable but cannot take a copy (the back end found no way to reach it
for that address family, `uncopyable`) is skipped like an unusable one.

Priority: the usable tiers in order, each with its rate in bytes per second (what the kernel
meters); the last usable tier loses its rate, as it takes whatever overflows. When no tier is
usable the first usable fallback takes every flow; when nothing at all is usable the layout is
kept, so the flows return by themselves.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from math import gcd

from services.contracts.policy import Balance, Duplicate, Priority


def base_buckets(action: Balance) -> tuple[int, ...]:
    """The BID of each bucket with every share usable: contiguous runs in share order."""
    divisor = 0
    for share in action.shares:
        divisor = gcd(divisor, share.weight)
    return tuple(share.bid for share in action.shares for _ in range(share.weight // divisor))


def _split(count: int, weights: list[tuple[int, int]]) -> list[int]:
    """`count` items over (bid, weight) by largest remainder: the BID of each item, in runs."""
    total = sum(w for _, w in weights)
    exact = [count * w / total for _, w in weights]
    quotas = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (quotas[i] - exact[i], i))
    for i in order[: count - sum(quotas)]:
        quotas[i] += 1
    return [bid for (bid, _), n in zip(weights, quotas, strict=True) for _ in range(n)]


def balance_buckets(action: Balance, unusable: Collection[int]) -> tuple[int, ...]:
    """The BID of each bucket now (see the module's description); one bucket means a plain
    forward to that BID."""
    base = base_buckets(action)
    usable = [(s.bid, s.weight) for s in action.shares if s.bid not in unusable]
    if not usable:
        fallback = next((bid for bid in action.fallbacks if bid not in unusable), None)
        return base if fallback is None else (fallback,)
    if len(usable) == len(action.shares):
        return base
    buckets = list(base)
    start = 0
    while start < len(buckets):
        end = start
        while end < len(buckets) and buckets[end] == buckets[start]:
            end += 1
        if buckets[start] in unusable:
            buckets[start:end] = _split(end - start, usable)
        start = end
    return tuple(buckets)


def duplicate_paths(
    action: Duplicate, unusable: Collection[int], uncopyable: Collection[int] = ()
) -> tuple[int, ...]:
    """The BIDs a packet goes to now: the original's first, then the copies'.

    A BID in `unusable` takes neither; one in `uncopyable` may take the original but no copy.
    """
    wanted = len(action.paths)
    usable = [bid for bid in action.bids() if bid not in unusable]
    if not usable:
        return action.paths
    chosen = [usable[0]]
    for bid in usable[1:]:
        if len(chosen) == wanted:
            break
        if bid not in uncopyable:
            chosen.append(bid)
    return tuple(chosen)


#: A tier's rate as the kernel meters it: bytes per second. 0 on the last tier: no limit.
Tiers = tuple[tuple[int, int], ...]


def priority_tiers(action: Priority, unusable: Collection[int]) -> Tiers:
    """(BID, rate in bytes per second) of each tier now (see the module's description); one
    tier means a plain forward to that BID."""
    usable = [tier for tier in action.tiers if tier.bid not in unusable]
    if not usable:
        fallback = next((bid for bid in action.fallbacks if bid not in unusable), None)
        if fallback is not None:
            return ((fallback, 0),)
        usable = list(action.tiers)
    found = [(tier.bid, (tier.rate_bps or 0) // 8) for tier in usable[:-1]]
    return (*found, (usable[-1].bid, 0))


def runs(buckets: Iterable[int]) -> list[tuple[int, int, int]]:
    """(first, last, bid) for each run of equal BIDs (the ranges of a bucket map)."""
    found: list[tuple[int, int, int]] = []
    for index, bid in enumerate(buckets):
        if found and found[-1][2] == bid and found[-1][1] == index - 1:
            found[-1] = (found[-1][0], index, bid)
        else:
            found.append((index, index, bid))
    return found
