"""Flow-binding policies: the data every service exchanges, independent of its XML form.

A policy message addresses one node (the HA for downlink, the MR for uplink) and carries one
operation on that node's policy set. The models are frozen and reject unknown fields, so a
message that validates here is safe to hand to any enforcement back end.
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Transport protocols whose header starts with 16-bit source and destination ports, so that a
#: port selector has a meaning (TCP, UDP, DCCP, SCTP, UDP-Lite).
PORT_PROTOCOLS = frozenset({6, 17, 33, 132, 136})

PolicyId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
NodeId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
Bid = Annotated[int, Field(ge=1, le=65535)]


class Direction(StrEnum):
    """Downlink policies are enforced at the HA, uplink policies at the MR."""

    DOWNLINK = "downlink"
    UPLINK = "uplink"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AddressRange(_Frozen):
    """An inclusive address range (RFC 6088 start/end address), both ends of one family."""

    first: IPAddress
    last: IPAddress

    @model_validator(mode="after")
    def _ordered(self) -> AddressRange:
        if self.first.version != self.last.version:
            raise ValueError("range ends are of different address families")
        if int(self.first) > int(self.last):
            raise ValueError(f"range start {self.first} is after its end {self.last}")
        return self


AddressMatch = IPNetwork | AddressRange


def address_bounds(match: AddressMatch) -> tuple[int, int, int]:
    """Return (family, lowest, highest) of an address selector as integers."""
    if isinstance(match, AddressRange):
        return match.first.version, int(match.first), int(match.last)
    low = int(match.network_address)
    # Computed from the prefix length: ipaddress's broadcast_address is far slower, and this
    # runs for every policy of a large install.
    return match.version, low, low | ((1 << (match.max_prefixlen - match.prefixlen)) - 1)


class PortRange(_Frozen):
    """An inclusive port range; a single port has first == last."""

    first: int = Field(ge=0, le=65535)
    last: int = Field(ge=0, le=65535)

    @model_validator(mode="after")
    def _ordered(self) -> PortRange:
        if self.first > self.last:
            raise ValueError(f"port range start {self.first} is after its end {self.last}")
        return self


class Selector(_Frozen):
    """Which packets a policy applies to; an absent field matches anything."""

    src_addr: AddressMatch | None = None
    dst_addr: AddressMatch | None = None
    src_port: PortRange | None = None
    dst_port: PortRange | None = None
    next_header: int | None = Field(default=None, ge=0, le=255)
    dscp: int | None = Field(default=None, ge=0, le=63)
    flow_label: int | None = Field(default=None, ge=0, le=0xFFFFF)

    @model_validator(mode="after")
    def _consistent(self) -> Selector:
        families = {address_bounds(a)[0] for a in (self.src_addr, self.dst_addr) if a is not None}
        if len(families) > 1:
            raise ValueError("source and destination addresses are of different families")
        if self.flow_label is not None and families == {4}:
            raise ValueError("a flow label selects IPv6 packets only, but the addresses are IPv4")
        has_ports = self.src_port is not None or self.dst_port is not None
        if has_ports and self.next_header not in PORT_PROTOCOLS:
            raise ValueError(
                "a port selector needs next_header TCP (6), UDP (17), DCCP (33), "
                "SCTP (132) or UDP-Lite (136)"
            )
        return self

    def families(self) -> tuple[int, ...]:
        """IP versions this selector can match: fixed by its addresses or flow label."""
        for address in (self.src_addr, self.dst_addr):
            if address is not None:
                return (address_bounds(address)[0],)
        if self.flow_label is not None:
            return (6,)
        return (4, 6)


class Forward(_Frozen):
    """Send matching packets into the pipe of `bid`, or of the first usable fallback."""

    kind: Literal["forward"] = "forward"
    bid: Bid
    fallbacks: tuple[Bid, ...] = ()

    @model_validator(mode="after")
    def _distinct(self) -> Forward:
        chain = (self.bid, *self.fallbacks)
        if len(set(chain)) != len(chain):
            raise ValueError(f"BID repeated in forward/fallback list {list(chain)}")
        return self

    def bids(self) -> tuple[int, ...]:
        """The primary BID followed by the fallbacks, in order of preference."""
        return (self.bid, *self.fallbacks)


class Drop(_Frozen):
    """Discard matching packets."""

    kind: Literal["drop"] = "drop"


#: At most this many BIDs in one balance, duplicate or priority action (its shares, paths or
#: tiers plus its fallbacks): the data plane keeps one hash bucket, copy or meter per BID.
MAX_ACTION_BIDS = 8
#: A share's weight is a count of hash buckets; the largest keeps a whole map under 8000.
MAX_WEIGHT = 1000


class Share(_Frozen):
    """One BID of a balance action and its integer weight (its number of hash buckets)."""

    bid: Bid
    weight: int = Field(ge=1, le=MAX_WEIGHT)


def _check_distinct(name: str, chain: tuple[int, ...]) -> None:
    if len(set(chain)) != len(chain):
        raise ValueError(f"BID repeated in {name} list {list(chain)}")
    if len(chain) > MAX_ACTION_BIDS:
        raise ValueError(
            f"{len(chain)} BIDs in {name} list {list(chain)}, at most {MAX_ACTION_BIDS}"
        )


class Balance(_Frozen):
    """Spread the class's flows over several BIDs by weight (schema version 2).

    Each flow is pinned to one BID by a hash of its 5-tuple, so no flow is reordered. The
    shares of unusable BIDs go to the usable ones; when none is usable, the first usable
    fallback takes every flow (as a forward's fallback would).
    """

    kind: Literal["balance"] = "balance"
    shares: tuple[Share, ...] = Field(min_length=1, max_length=MAX_ACTION_BIDS)
    fallbacks: tuple[Bid, ...] = ()

    @model_validator(mode="after")
    def _distinct(self) -> Balance:
        _check_distinct("balance/fallback", self.bids())
        return self

    def bids(self) -> tuple[int, ...]:
        """The shares' BIDs followed by the fallbacks."""
        return (*(share.bid for share in self.shares), *self.fallbacks)


class Duplicate(_Frozen):
    """Send every packet of the class on each of `paths` at once (schema version 2).

    The original packet takes the first usable path, copies take the others. A path that is
    unusable is replaced by the next usable fallback, so the class keeps as many copies as it
    can.
    """

    kind: Literal["duplicate"] = "duplicate"
    paths: tuple[Bid, ...] = Field(min_length=2, max_length=MAX_ACTION_BIDS)
    fallbacks: tuple[Bid, ...] = ()

    @model_validator(mode="after")
    def _distinct(self) -> Duplicate:
        _check_distinct("duplicate/fallback", self.bids())
        return self

    def bids(self) -> tuple[int, ...]:
        """The paths followed by the fallbacks."""
        return (*self.paths, *self.fallbacks)


#: The lowest and highest rate of a priority tier, in bits per second (1 kB/s to 100 Gbit/s):
#: the data plane meters bytes per second, so a rate below 8000 would round to nothing, and
#: the kernel's byte meter refuses a rate whose second in nanoseconds overflows 64 bits
#: (about 147 Gbit/s: "Value too large for defined data type", measured).
MIN_TIER_RATE_BPS = 8000
MAX_TIER_RATE_BPS = 10**11


class Tier(_Frozen):
    """One BID of a priority action and the rate of the class it carries before new flows
    overflow to the next tier (bits per second; the last tier has none: it takes the rest)."""

    bid: Bid
    rate_bps: int | None = Field(default=None, ge=MIN_TIER_RATE_BPS, le=MAX_TIER_RATE_BPS)


class Priority(_Frozen):
    """Fill the first tier's BID up to its rate, overflow to the next (schema version 2).

    The data plane decides per flow: while a tier's BID carries more of the class than its
    rate, new flows of the class start on the next tier; a flow stays on the BID it started
    on, so none is reordered. Unusable tiers are skipped; when no tier is usable the first
    usable fallback takes every flow (as a forward's fallback would).
    """

    kind: Literal["priority"] = "priority"
    tiers: tuple[Tier, ...] = Field(min_length=2, max_length=MAX_ACTION_BIDS)
    fallbacks: tuple[Bid, ...] = ()

    @model_validator(mode="after")
    def _rates(self) -> Priority:
        _check_distinct("priority/fallback", self.bids())
        for index, tier in enumerate(self.tiers[:-1]):
            if tier.rate_bps is None:
                raise ValueError(
                    f"tier {index + 1} (BID {tier.bid}) has no rate: every tier but the last "
                    "needs one, above it new flows overflow to the next tier"
                )
        last = self.tiers[-1]
        if last.rate_bps is not None:
            raise ValueError(
                f"the last tier (BID {last.bid}) has a rate: it takes whatever overflows the "
                "tiers before it, so it has none"
            )
        return self

    def bids(self) -> tuple[int, ...]:
        """The tiers' BIDs in order of preference, followed by the fallbacks."""
        return (*(tier.bid for tier in self.tiers), *self.fallbacks)


Action = Annotated[Forward | Drop | Balance | Duplicate | Priority, Field(discriminator="kind")]

#: The actions a version-1 document can carry; the others need version 2.
VERSION_1_ACTIONS = (Forward, Drop)


class Policy(_Frozen):
    """One flow-binding entry. Lower priority wins where selectors overlap (RFC 6089 FID-PRI)."""

    id: PolicyId
    priority: int = Field(ge=0, le=65535)
    selector: Selector = Selector()
    action: Action

    def sort_key(self) -> tuple[int, str]:
        """Precedence order: priority, then id so that ties are deterministic."""
        return (self.priority, self.id)


class Install(_Frozen):
    """Replace the node's whole policy set."""

    kind: Literal["install"] = "install"
    policies: tuple[Policy, ...] = ()


class Update(_Frozen):
    """Change entries by id: delete first, then replace, then insert."""

    kind: Literal["update"] = "update"
    insert: tuple[Policy, ...] = ()
    delete: tuple[PolicyId, ...] = ()
    replace: tuple[Policy, ...] = ()


class Flush(_Frozen):
    """Remove every policy of the node."""

    kind: Literal["flush"] = "flush"


Operation = Annotated[Install | Update | Flush, Field(discriminator="kind")]


class PolicyMessage(_Frozen):
    """One operation for one node, with the node's monotonically increasing version."""

    node: NodeId
    mobile_router: NodeId
    direction: Direction
    version: int = Field(ge=1, le=2**63 - 1)
    operation: Operation
    #: Scheme 2: the HA enforces this downlink set and derives the mirrored uplink set for the MR.
    symmetric: bool = False

    @model_validator(mode="after")
    def _unique_ids(self) -> PolicyMessage:
        if self.symmetric and self.direction is not Direction.DOWNLINK:
            raise ValueError("only a downlink document can be symmetric (scheme 2)")
        op = self.operation
        if isinstance(op, Install):
            _require_unique("install", [p.id for p in op.policies])
        elif isinstance(op, Update):
            _require_unique("insert", [p.id for p in op.insert])
            _require_unique("delete", list(op.delete))
            _require_unique("replace", [p.id for p in op.replace])
            touched = [p.id for p in op.insert] + list(op.delete) + [p.id for p in op.replace]
            _require_unique("update (an id may appear in one list only)", touched)
        return self

    def schema_version(self) -> int:
        """The lowest document version that can carry this message: 1 unless an action is
        new in version 2 (balance, duplicate, priority)."""
        op = self.operation
        policies: tuple[Policy, ...] = ()
        if isinstance(op, Install):
            policies = op.policies
        elif isinstance(op, Update):
            policies = (*op.insert, *op.replace)
        newer = any(not isinstance(p.action, VERSION_1_ACTIONS) for p in policies)
        return 2 if newer else 1

    def policy_count(self) -> int:
        """Number of policy entries the message carries (for size limits)."""
        op = self.operation
        if isinstance(op, Install):
            return len(op.policies)
        if isinstance(op, Update):
            return len(op.insert) + len(op.replace) + len(op.delete)
        return 0


def _require_unique(where: str, ids: list[str]) -> None:
    seen: set[str] = set()
    for policy_id in ids:
        if policy_id in seen:
            raise ValueError(f"policy id {policy_id!r} appears twice in {where}")
        seen.add(policy_id)


def selectors_overlap(a: Selector, b: Selector) -> bool:
    """True when some packet could match both selectors (used to order enforcement layers)."""
    if not set(a.families()) & set(b.families()):
        return False
    for x, y in ((a.src_addr, b.src_addr), (a.dst_addr, b.dst_addr)):
        if x is not None and y is not None:
            _, xlo, xhi = address_bounds(x)
            _, ylo, yhi = address_bounds(y)
            if xhi < ylo or yhi < xlo:
                return False
    for p, q in ((a.src_port, b.src_port), (a.dst_port, b.dst_port)):
        if p is not None and q is not None and (p.last < q.first or q.last < p.first):
            return False
    for u, v in ((a.next_header, b.next_header), (a.dscp, b.dscp), (a.flow_label, b.flow_label)):
        if u is not None and v is not None and u != v:
            return False
    return True


def mirror_selector(selector: Selector) -> Selector:
    """The selector of the reverse direction: source and destination swapped."""
    return selector.model_copy(
        update={
            "src_addr": selector.dst_addr,
            "dst_addr": selector.src_addr,
            "src_port": selector.dst_port,
            "dst_port": selector.src_port,
        }
    )


def mirror_message(message: PolicyMessage, node: str) -> PolicyMessage:
    """The uplink message for the MR's `node` derived from a symmetric downlink message.

    Same version, same policy ids, BIDs and priorities; every selector mirrored. This is the
    paper's scheme 2, where the HA maps the symmetric uplink set for the MR.
    """

    def flip(policies: tuple[Policy, ...]) -> tuple[Policy, ...]:
        return tuple(
            p.model_copy(update={"selector": mirror_selector(p.selector)}) for p in policies
        )

    op = message.operation
    operation: Install | Update | Flush
    if isinstance(op, Install):
        operation = Install(policies=flip(op.policies))
    elif isinstance(op, Update):
        operation = Update(insert=flip(op.insert), delete=op.delete, replace=flip(op.replace))
    else:
        operation = op
    return PolicyMessage(
        node=node,
        mobile_router=message.mobile_router,
        direction=Direction.UPLINK,
        version=message.version,
        operation=operation,
    )
