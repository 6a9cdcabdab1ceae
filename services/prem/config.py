"""Settings of a PREM worker: which node it is, which BIDs exist there, what it owns."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.contracts.policy import Bid, Direction, NodeId
from services.metrics import ListenAddress


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


class PremSettings(BaseModel):
    """Validated settings of one PREM worker (the `[prem]` table)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    node: NodeId
    role: Role
    mobile_router: NodeId
    peer_node: NodeId | None = Field(
        default=None,
        description="on an HA: the MR's node, which gets the mirrored uplink set of a "
        "symmetric downlink document (scheme 2)",
    )
    backend: Literal["nftables", "iptables", "memory"] = "nftables"
    bids: tuple[BidSettings, ...] = Field(min_length=1)
    mark_mask: int = Field(default=0x00FF0000, gt=0, le=0xFFFFFFFF)
    table_base: int = Field(default=1000, ge=1, le=2**31 - 70000)
    rule_priority: int = Field(default=20000, ge=1, le=32000)
    name_prefix: str = Field(default="multinet", pattern=r"^[a-z][a-z0-9_]{0,15}$")
    state_file: Path = Path("/var/lib/multinet/prem.json")
    remove_on_exit: bool = False
    limits: Limits = Limits()
    metrics_listen: ListenAddress | None = Field(
        default=None, description="HOST:PORT of the Prometheus /metrics endpoint; None: off"
    )

    @model_validator(mode="after")
    def _bids_fit(self) -> PremSettings:
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
        """The direction of the policies this worker enforces."""
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
