"""Settings of the MCoA agent (the `[mcoa]` section): one model per role, frozen, strict.

The mobile router side names its egress links (interface, BID, priority) and what it registers;
the home agent side names the mobile routers it serves and the prefixes each may claim. Both
share the table convention of the PREM (BID table = `table_base + bid`, as
`services.prem.config.PremSettings.table_of`), so the PREM's fwmark rules land in the tables
this agent fills.
"""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from services.contracts.policy import NodeId
from services.contracts.settings import ListenAddress
from services.mobility_header.codec import LIFETIME_UNIT_SECONDS, MAX_LIFETIME_UNITS

_MAX_LIFETIME = LIFETIME_UNIT_SECONDS * MAX_LIFETIME_UNITS


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _whole_units(seconds: int) -> int:
    """A lifetime the wire can carry as it is: RFC 6275 sends lifetimes in 4 s units, and a
    silent rounding (10 s sent as 8 s) would make bindings run out earlier than configured."""
    if seconds % LIFETIME_UNIT_SECONDS:
        down = seconds - seconds % LIFETIME_UNIT_SECONDS
        raise ValueError(
            f"{seconds} s is not a multiple of {LIFETIME_UNIT_SECONDS} s (Binding Updates carry "
            f"lifetimes in {LIFETIME_UNIT_SECONDS} s units): use {down} or "
            f"{down + LIFETIME_UNIT_SECONDS}"
        )
    return seconds


class LinkSettings(_Frozen):
    """One egress link of the mobile router: one care-of address, one BID, one pipe."""

    interface: str = Field(min_length=1, max_length=15)
    bid: int = Field(ge=1, le=0xFFFF)
    priority: int = Field(default=0, ge=0, le=127, description="BID-PRI (RFC 6089)")
    gateway: IPv6Address | None = Field(
        default=None, description="next hop towards the HA on this link (on-link if unset)"
    )


class MrSettings(_Frozen):
    """What the mobile router registers, over which links, and how often."""

    mr_id: NodeId
    home_address: IPv6Address
    ha_address: IPv6Address
    prefixes: tuple[IPv6Network, ...] = Field(min_length=1)
    links: tuple[LinkSettings, ...] = Field(min_length=1)
    lifetime: Annotated[int, AfterValidator(_whole_units)] = Field(
        default=60, ge=LIFETIME_UNIT_SECONDS, le=_MAX_LIFETIME
    )
    refresh_fraction: float = Field(default=0.8, gt=0.1, lt=1.0)
    retransmit_initial: float = Field(default=1.0, gt=0.0, le=10.0)
    retransmit_max: int = Field(default=3, ge=0, le=10)
    source_rule_priority: int = Field(
        default=15000,
        ge=1,
        le=31999,
        description="`from <CoA> to <HA>` rules that keep a BID's outer packets on its link; "
        "must sit before the PREM's fwmark rules",
    )

    @model_validator(mode="after")
    def _distinct(self) -> MrSettings:
        bids = [link.bid for link in self.links]
        if len(set(bids)) != len(bids):
            raise ValueError(f"each link needs its own BID, got {bids}")
        names = [link.interface for link in self.links]
        if len(set(names)) != len(names):
            raise ValueError(f"each interface may carry one BID, got {names}")
        return self


def default_mr_id(home: IPv6Address | str) -> str:
    """The bus id of a mobile router whose entry names none: `mr-` and its home address with
    `-` for `:` (`2001:db8:100::2` -> `mr-2001-db8-100--2`), unique as home addresses are."""
    return "mr-" + IPv6Address(home).compressed.replace(":", "-")


class KnownMr(_Frozen):
    """A mobile router the home agent serves, and the prefixes it may register.

    `id` names the router on the bus (binding event topics); absent, it is derived from the
    home address (`default_mr_id`), so older files stay valid.
    """

    id: NodeId
    home_address: IPv6Address
    prefixes: tuple[IPv6Network, ...] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _default_id(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("id") is None and "home_address" in data:
            try:
                return {**data, "id": default_mr_id(data["home_address"])}
            except (TypeError, ValueError):
                return data  # the home address field reports its own error
        return data


class HaSettings(_Frozen):
    """Who may register at this home agent and for how long at most."""

    ha_address: IPv6Address
    mobile_routers: tuple[KnownMr, ...] = Field(min_length=1)
    max_lifetime: Annotated[int, AfterValidator(_whole_units)] = Field(
        default=3600, ge=LIFETIME_UNIT_SECONDS, le=_MAX_LIFETIME
    )
    publish_events: bool = Field(
        default=False,
        description="publish a binding event per binding cache change on the bus (the "
        "top-level [broker] table), as the mobility-events service does from captures",
    )

    @model_validator(mode="after")
    def _distinct(self) -> HaSettings:
        homes = [mr.home_address for mr in self.mobile_routers]
        if len(set(homes)) != len(homes):
            raise ValueError("a home address is listed twice in mobile_routers")
        ids = [mr.id for mr in self.mobile_routers]
        if len(set(ids)) != len(ids):
            raise ValueError("a mobile router id is listed twice in mobile_routers")
        return self

    def mr_ids(self) -> dict[IPv6Address, str]:
        """Home address -> bus id of every mobile router served."""
        return {mr.home_address: mr.id for mr in self.mobile_routers}

    def known(self, home: IPv6Address) -> KnownMr | None:
        """The entry for `home`, or None for a mobile router we do not serve."""
        return next((mr for mr in self.mobile_routers if mr.home_address == home), None)


class McoaSettings(_Frozen):
    """Validated settings of one MCoA agent; exactly the section of its role is present."""

    node: NodeId
    role: Literal["mr", "ha"]
    pipe: Literal["auto", "ip6tnl", "seg6", "vxlan"] = Field(
        default="auto",
        description="the pipe kind (services/mcoa/pipe_kinds.py): auto takes the first of "
        "ip6tnl, seg6, vxlan that this kernel has; an HA with auto accepts each of them",
    )
    vxlan_port: int = Field(default=4789, ge=1, le=65535, description="UDP port of VXLAN pipes")
    pipe_mtu: int | None = Field(
        default=None,
        ge=1280,
        le=65535,
        description="MTU of VXLAN pipe devices; None: the underlay's MTU minus 70 bytes (the "
        "MR: each link's MTU; the HA: 1500)",
    )
    table_base: int = Field(default=1000, ge=1, le=2**31 - 70000)
    decap_table: int = Field(default=999, ge=1, le=2**31 - 1)
    decap_rule_priority: int = Field(default=10, ge=1, le=31999)
    local_rule_priority: int = Field(default=32000, ge=1, le=32765)
    metrics_listen: ListenAddress | None = Field(
        default=None, description="HOST:PORT of the Prometheus /metrics endpoint; None: off"
    )
    mr: MrSettings | None = None
    ha: HaSettings | None = None

    @model_validator(mode="before")
    @classmethod
    def _old_pipe_name(cls, data: Any) -> Any:
        """Files from before pipe kinds said `pipe = "srv6"`: that is `seg6` now."""
        if isinstance(data, dict) and data.get("pipe") == "srv6":
            return {**data, "pipe": "seg6"}
        return data

    @model_validator(mode="after")
    def _role_section(self) -> McoaSettings:
        if self.role == "mr" and (self.mr is None or self.ha is not None):
            raise ValueError("role mr needs the [mcoa.mr] section and no [mcoa.ha]")
        if self.role == "ha" and (self.ha is None or self.mr is not None):
            raise ValueError("role ha needs the [mcoa.ha] section and no [mcoa.mr]")
        if self.table_base < self.decap_table <= self.table_base + 0xFFFF:
            raise ValueError("decap_table must lie outside the BID tables")
        if self.decap_rule_priority >= self.local_rule_priority:
            raise ValueError("decap_rule_priority must come before local_rule_priority")
        return self

    def table_of(self, bid: int) -> int:
        """The routing table holding `bid`'s routes (as the PREM's)."""
        return self.table_base + bid

    def owns_table(self, table: int) -> bool:
        """Whether `table` is one of the BID tables."""
        return self.table_base < table <= self.table_base + 0xFFFF
