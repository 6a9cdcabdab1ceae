"""Hypothesis strategies shared by the policy-document tests (the codec's properties, the
security battery): an operation of a policy message over some ids, from a policy strategy."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import strategies as st

from services.contracts.policy import Flush, Install, Policy, Update

#: How often each operation is drawn (a list to sample from: repeat a kind to favour it).
KINDS = ("install", "update", "flush")


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
