"""What the pure core knows of its node: which node it is, the role it plays, its BIDs and how
they map to firewall marks, routing tables and rule priorities, the names it owns, and the
bounds on a policy document.

The worker's settings (`services.prem.config.PremSettings`, the `[prem]` table) are these plus
what only the shell needs (back end, state file, metrics endpoint); the core takes
`NodeSettings`, so any `PremSettings` will do.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.contracts.policy import Bid, Direction, NodeId


class Role(StrEnum):
    """The HA enforces downlink policies, the MR uplink ones."""

    HA = "ha"
    MR = "mr"

    @property
    def direction(self) -> Direction:
        """The direction of the policies this role enforces."""
        return Direction.DOWNLINK if self is Role.HA else Direction.UPLINK


class BidSettings(BaseModel):
    """One binding (bit pipe) of this node: its BID and the device its traffic leaves by."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bid: Bid
    interface: str | None = Field(
        default=None, description="egress device; carrier loss here makes the BID unusable"
    )


class Limits(BaseModel):
    """Bounds on incoming policy documents."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_document_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_policies: int = Field(default=20000, ge=1)


class NodeSettings(BaseModel):
    """A node's identity and layout: the part of the `[prem]` table the pure core reads."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    node: NodeId
    role: Role
    mobile_router: NodeId
    peer_node: NodeId | None = Field(
        default=None,
        description="on an HA: the MR's node, which gets the mirrored uplink set of a "
        "symmetric downlink document (scheme 2)",
    )
    bids: tuple[BidSettings, ...] = Field(min_length=1)
    mark_mask: int = Field(default=0x00FF0000, gt=0, le=0xFFFFFFFF)
    table_base: int = Field(default=1000, ge=1, le=2**31 - 70000)
    rule_priority: int = Field(default=20000, ge=1, le=32000)
    name_prefix: str = Field(default="multinet", pattern=r"^[a-z][a-z0-9_]{0,15}$")
    limits: Limits = Limits()

    @model_validator(mode="after")
    def _bids_fit(self) -> NodeSettings:
        if self.peer_node is not None and self.role is not Role.HA:
            raise ValueError("peer_node is for an HA (it forwards the mirrored uplink set)")
        seen: set[int] = set()
        for entry in self.bids:
            if entry.bid in seen:
                raise ValueError(f"BID {entry.bid} is declared twice")
            seen.add(entry.bid)
            if entry.bid > self.mark_mask >> self.mark_shift:
                raise ValueError(
                    f"BID {entry.bid} does not fit in mark_mask {self.mark_mask:#010x}"
                )
        return self

    @property
    def direction(self) -> Direction:
        """The direction of the policies this node enforces."""
        return self.role.direction

    @property
    def mark_shift(self) -> int:
        """Position of the lowest bit of the mask: BID values are shifted by this much."""
        return (self.mark_mask & -self.mark_mask).bit_length() - 1

    def mark_of(self, bid: int) -> int:
        """The firewall mark (within mark_mask) that sends a packet into `bid`'s table."""
        return (bid << self.mark_shift) & self.mark_mask

    def table_of(self, bid: int) -> int:
        """The routing table holding `bid`'s routes."""
        return self.table_base + bid

    def bid_numbers(self) -> tuple[int, ...]:
        """Declared BIDs, in declaration order."""
        return tuple(entry.bid for entry in self.bids)
