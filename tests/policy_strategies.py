"""Hypothesis strategies shared by the policy-document tests (the codec's properties, the
security battery): an operation of a policy message over some ids, from a policy strategy."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import strategies as st

from services.contracts.policy import (
    MAX_ACTION_BIDS,
    MAX_WEIGHT,
    Balance,
    Drop,
    Duplicate,
    Flush,
    Forward,
    Install,
    Policy,
    Share,
    Update,
)

#: How often each operation is drawn (a list to sample from: repeat a kind to favour it).
KINDS = ("install", "update", "flush")


def forwards(bids: st.SearchStrategy[int]) -> st.SearchStrategy[Forward]:
    """A forward to one BID with up to three fallbacks (distinct)."""
    return st.lists(bids, min_size=1, max_size=4, unique=True).map(
        lambda chain: Forward(bid=chain[0], fallbacks=tuple(chain[1:]))
    )


def balances(bids: st.SearchStrategy[int]) -> st.SearchStrategy[Balance]:
    """A balance (schema version 2): 1 to 8 distinct BIDs, weights at the bounds or between,
    the last few of them fallbacks."""

    @st.composite
    def build(draw: st.DrawFn) -> Balance:
        chain = draw(st.lists(bids, min_size=1, max_size=MAX_ACTION_BIDS, unique=True))
        cut = draw(st.integers(1, len(chain)))
        weights = st.sampled_from([1, MAX_WEIGHT]) | st.integers(1, MAX_WEIGHT)
        shares = tuple(Share(bid=bid, weight=draw(weights)) for bid in chain[:cut])
        return Balance(shares=shares, fallbacks=tuple(chain[cut:]))

    return build()


def duplicates(bids: st.SearchStrategy[int]) -> st.SearchStrategy[Duplicate]:
    """A duplicate (schema version 2): 2 to 8 distinct BIDs, the last few of them fallbacks."""

    @st.composite
    def build(draw: st.DrawFn) -> Duplicate:
        chain = draw(st.lists(bids, min_size=2, max_size=MAX_ACTION_BIDS, unique=True))
        cut = draw(st.integers(2, len(chain)))
        return Duplicate(paths=tuple(chain[:cut]), fallbacks=tuple(chain[cut:]))

    return build()


def actions(
    bids: st.SearchStrategy[int],
) -> st.SearchStrategy[Drop | Forward | Balance | Duplicate]:
    """Any action of either schema version."""
    return st.just(Drop()) | forwards(bids) | balances(bids) | duplicates(bids)


def operations(
    ids: st.SearchStrategy[list[str]],
    policies: Callable[[str], st.SearchStrategy[Policy]],
    kinds: tuple[str, ...] = KINDS,
) -> st.SearchStrategy[Install | Update | Flush]:
    """An Install, Update or Flush over the ids drawn (unique), each policy from `policies`;
    an Update deletes, replaces or inserts each id."""

    @st.composite
    def build(draw: st.DrawFn) -> Install | Update | Flush:
        kind = draw(st.sampled_from(kinds))
        chosen_ids = draw(ids)
        if kind == "flush":
            return Flush()
        if kind == "install":
            return Install(policies=tuple(draw(policies(i)) for i in chosen_ids))
        size = len(chosen_ids)
        which = draw(st.lists(st.sampled_from("dri"), min_size=size, max_size=size))
        chosen = list(zip(which, chosen_ids, strict=True))
        return Update(
            delete=tuple(i for w, i in chosen if w == "d"),
            replace=tuple(draw(policies(i)) for w, i in chosen if w == "r"),
            insert=tuple(draw(policies(i)) for w, i in chosen if w == "i"),
        )

    return build()
