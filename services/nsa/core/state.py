"""What the NSA remembers per mobile router between decisions: each class's assignment and
the stability bookkeeping (challenger and since when, links left for a handover, load-sharing
members), and what a flow's policy does beyond forwarding (balance shares, duplicate copies,
priority tiers, protection and its hold time). A JSON-able model, so a service can persist it
or show it.
"""

from __future__ import annotations

from pydantic import Field

from services.contracts.policy import Bid, NodeId
from services.nsa.core.frozen import Frozen


class ClassState(Frozen):
    """Where one class is, and the stability bookkeeping that goes with it."""

    flows: tuple[Bid, ...] = Field(default=(), description="BID per selector; (): withdrawn")
    fallbacks: tuple[Bid, ...] = Field(default=(), description="BIDs allowed, fallback order")
    moved_at: float | None = None
    challenger: Bid | None = None
    challenger_since: float | None = None
    awaiting: tuple[Bid, ...] = Field(default=(), description="left for a handover; return")
    went_down: tuple[Bid, float] | None = Field(
        default=None,
        description="(BID, when) left because it went down; a handover of it makes it awaited",
    )
    members: tuple[Bid, ...] = Field(default=(), description="load sharing: links in use")
    displaced: dict[Bid, tuple[int, ...]] = Field(
        default_factory=dict, description="load sharing: flows (indices) left for a handover"
    )
    eligible_since: dict[Bid, float] = Field(
        default_factory=dict, description="load sharing and balancing"
    )
    balance: tuple[tuple[Bid, int], ...] = Field(
        default=(), description="load balancing: (BID, weight) of each flow's balance action"
    )
    copies: tuple[Bid, ...] = Field(
        default=(), description="redundant or protected: BIDs carrying a copy of every packet"
    )
    tiers: tuple[tuple[Bid, int | None], ...] = Field(
        default=(),
        description="priority-overflow: (BID, capacity in bit/s) in order; the last has None",
    )
    protected_since: float | None = Field(
        default=None, description="protect when-at-risk: when the copies started"
    )
    healthy_since: float | None = Field(
        default=None, description="protected: since when the class's link is not at risk"
    )

    @property
    def current(self) -> int | None:
        """The class's link (single-link modes): the BID of its first flow."""
        return self.flows[0] if self.flows else None


class MrState(Frozen):
    """The NSA's memory for one mobile router between decisions."""

    mobile_router: NodeId
    classes: dict[str, ClassState] = Field(default_factory=dict)

    def assignment(self) -> dict[str, tuple[int, ...]]:
        """Class name -> BID per selector (empty: withdrawn, default path)."""
        return {name: state.flows for name, state in self.classes.items()}
