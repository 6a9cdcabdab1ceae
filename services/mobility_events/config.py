"""Settings of the mobility-events service (the `[mobility_events]` table).

The service must know which mobile router a Binding Update belongs to, and the packets here do
not say (no Home Address option, docs/kernel.md): each router is declared with its Mobile Network
Prefixes, which its BUs carry, and optionally fixed care-of addresses for BUs without a prefix
option.
"""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.contracts.policy import Bid, NodeId
from services.contracts.settings import ListenAddress
from services.mobility_events.bindings import DEFAULT_PENDING_TIMEOUT_S, MnpIdentity


class MobileRouterSettings(BaseModel):
    """One mobile router: its id on the bus and how its Binding Updates are recognised."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: NodeId
    prefixes: tuple[IPv6Network, ...] = Field(
        min_length=1,
        description="Mobile Network Prefixes; a BU's MNP option inside one of "
        "them identifies this router",
    )
    care_of_addresses: tuple[IPv6Address, ...] = Field(
        default=(), description="fixed care-of addresses identifying BUs without an MNP option"
    )


class MobilityEventsSettings(BaseModel):
    """Validated settings of one mobility-events service."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    node: NodeId
    mobile_routers: tuple[MobileRouterSettings, ...] = Field(min_length=1)
    handover_started_on_new_coa: bool = True
    tick_interval_s: float = Field(default=0.5, gt=0, le=60)
    pending_timeout_s: float = Field(default=DEFAULT_PENDING_TIMEOUT_S, gt=0, le=3600)
    default_bid: Bid | None = Field(
        default=1, description="the BID of a BU without Binding Identifier options; null ignores it"
    )
    capture_outgoing: bool = Field(
        default=True,
        description="also see the signalling this node sends (an HA's BAs, an MR's BUs) through "
        "a filtered packet socket; the raw socket only sees what arrives",
    )
    queue_size: int = Field(default=1024, ge=16, le=1_000_000)
    metrics_listen: ListenAddress | None = Field(
        default=None, description="HOST:PORT of the Prometheus /metrics endpoint; None: off"
    )

    @model_validator(mode="after")
    def _routers_distinct(self) -> MobilityEventsSettings:
        ids: set[str] = set()
        owners: dict[IPv6Address, str] = {}
        prefixes: list[tuple[IPv6Network, str]] = []
        for router in self.mobile_routers:
            if router.id in ids:
                raise ValueError(f"mobile router {router.id} is declared twice")
            ids.add(router.id)
            for prefix in router.prefixes:
                for other, owner in prefixes:
                    if prefix.overlaps(other):
                        raise ValueError(
                            f"prefix {prefix} of {router.id} overlaps {other} of {owner}"
                        )
                prefixes.append((prefix, router.id))
            for address in router.care_of_addresses:
                if address in owners:
                    raise ValueError(
                        f"care-of address {address} is declared for {owners[address]} "
                        f"and {router.id}"
                    )
                owners[address] = router.id
        return self

    def identity(self) -> MnpIdentity:
        """The MR identification policy these settings describe."""
        return MnpIdentity(
            {router.id: router.prefixes for router in self.mobile_routers},
            {
                address: router.id
                for router in self.mobile_routers
                for address in router.care_of_addresses
            },
        )
