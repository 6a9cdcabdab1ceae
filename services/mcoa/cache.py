"""The home agent's binding cache and its answer to each Binding Update, as pure functions.

`decide` takes (settings, cache, BU, source address, now) and returns the BA to send and the
new cache; `expire` drops what has run out; `desired_pipes` says which routes the kernel must
hold for a cache. Nothing here sends a packet or touches netlink, so every status code and the
expiry clock are tested with plain values (`now` is an argument).

Status codes (RFC 6275 6.1.8, NEMO RFC 3963 4.2, MCoA RFC 5648 6.2) chosen here:
131 no H flag (we only do home registration); 133 unknown mobile router; 140 R flag missing;
164 no usable Binding Identifier; 168 more than one (bulk registration is not offered);
169 the H flag of the BID (simultaneous home and foreign binding); 129 a care-of address
inside the mobile network or equal to the HA address; 141 a zero-length prefix;
142 a prefix the mobile router may not claim; 143 no prefix at all, or a pipe kind the home
agent does not offer (the BA then lists the kinds it offers; `pipe_option`); 135 a sequence
number not newer than the cached one for that BID.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network

from services.mcoa.config import HaSettings
from services.mcoa.identity import home_address_of
from services.mobility_header import pipe_option
from services.mobility_header.codec import (
    BindingAcknowledgement,
    BindingUpdate,
    lifetime_units,
)
from services.mobility_header.mh_options import BindingIdentifier, MobilityOption
from services.mobility_header.status import BaStatus

#: (home address, BID): one binding per care-of address of one mobile router.
BindingKey = tuple[IPv6Address, int]
Cache = Mapping[BindingKey, "Binding"]

_SEQUENCE_WINDOW = 1 << 15
#: The pipe kind of a BU that names none: a plain NEMO mobile router's IPv6-in-IPv6 tunnel.
LEGACY_KIND = "ip6tnl"


@dataclass(frozen=True, slots=True)
class Binding:
    """One registered care-of address of a mobile router."""

    home: IPv6Address
    bid: int
    care_of: IPv6Address
    prefixes: tuple[IPv6Network, ...]
    priority: int
    sequence: int
    lifetime: int
    expires_at: float
    pipe_kind: str = LEGACY_KIND


@dataclass(frozen=True, slots=True)
class Decision:
    """What to answer and the cache to keep; `ack` is None when no BA is due."""

    status: int
    ack: BindingAcknowledgement | None
    cache: dict[BindingKey, Binding]
    home: IPv6Address | None = None


@dataclass(frozen=True, slots=True, order=True)
class PipeRoute:
    """A mobile network prefix routed into the pipe of one binding (its BID, its mobile
    router's home address, its kind), towards one care-of address."""

    table: int
    prefix: IPv6Network
    care_of: IPv6Address
    bid: int
    home: IPv6Address
    kind: str


def sequence_newer(candidate: int, last: int) -> bool:
    """RFC 6275 9.5.1: newer when ahead by less than half the 16-bit space."""
    return 0 < (candidate - last) % (1 << 16) < _SEQUENCE_WINDOW


def make_ack(
    bu: BindingUpdate,
    status: int,
    lifetime: int,
    bid: int | None,
    *,
    extra: tuple[MobilityOption, ...] = (),
) -> BindingAcknowledgement:
    """The BA answering `bu` (R flag set; the BID option echoes `bid` with the status)."""
    options = (() if bid is None else (BindingIdentifier(bid, status=status),)) + extra
    return BindingAcknowledgement(
        status=status,
        sequence=bu.sequence,
        lifetime=lifetime,
        mobile_router=True,
        options=options,
    )


def _reject(
    bu: BindingUpdate,
    cache: Cache,
    status: int,
    home: IPv6Address | None,
    bid: int | None = None,
    *,
    extra: tuple[MobilityOption, ...] = (),
) -> Decision:
    return Decision(status, make_ack(bu, status, 0, bid, extra=extra), dict(cache), home)


def _prefix_status(
    prefixes: tuple[IPv6Network, ...], allowed: tuple[IPv6Network, ...]
) -> int | None:
    if not prefixes:
        return BaStatus.FORWARDING_SETUP_FAILED
    for prefix in prefixes:
        if prefix.prefixlen == 0:
            return BaStatus.INVALID_PREFIX
        if not any(prefix.subnet_of(a) for a in allowed):
            return BaStatus.NOT_AUTHORIZED_FOR_PREFIX
    return None


def decide(  # noqa: PLR0911, PLR0912 - one early return per refusal, in RFC order, reads best
    settings: HaSettings,
    cache: Cache,
    bu: BindingUpdate,
    source: IPv6Address,
    now: float,
    *,
    offered: Collection[str] = (LEGACY_KIND,),
) -> Decision:
    """Validate one BU against the settings and the cache; return the BA and the new cache.

    `offered` are the pipe kinds this home agent can build; a BU asking for another one is
    refused with 143 and the BA lists `offered`."""
    home = home_address_of(bu.options)
    if not bu.home_registration:
        return _reject(bu, cache, BaStatus.HOME_REGISTRATION_NOT_SUPPORTED, home)
    known = None if home is None else settings.known(home)
    if home is None or known is None:
        return _reject(bu, cache, BaStatus.NOT_HOME_AGENT_FOR_THIS_MOBILE_NODE, home)
    if not bu.mobile_router:
        return _reject(bu, cache, BaStatus.MOBILE_ROUTER_OPERATION_NOT_PERMITTED, home)
    bids = bu.binding_ids
    if bu.lifetime == 0 and not bids:
        kept = {key: b for key, b in cache.items() if key[0] != home}
        return Decision(BaStatus.ACCEPTED, make_ack(bu, BaStatus.ACCEPTED, 0, None), kept, home)
    if len(bids) > 1:
        return _reject(bu, cache, BaStatus.MCOA_BULK_REGISTRATION_PROHIBITED, home)
    if not bids or bids[0].bid == 0:
        return _reject(bu, cache, BaStatus.MCOA_MALFORMED, home)
    option = bids[0]
    bid = option.bid
    if option.simultaneous_home_foreign:
        status = BaStatus.MCOA_SIMULTANEOUS_HOME_AND_FOREIGN_PROHIBITED
        return _reject(bu, cache, status, home, bid)
    care_of = option.care_of if option.care_of is not None else source
    if not isinstance(care_of, IPv6Address):
        return _reject(bu, cache, BaStatus.MCOA_MALFORMED, home, bid)
    old = cache.get((home, bid))
    if old is not None and not sequence_newer(bu.sequence, old.sequence):
        status = BaStatus.SEQUENCE_NUMBER_OUT_OF_WINDOW
        ack = BindingAcknowledgement(
            status, old.sequence, 0, mobile_router=True, options=(BindingIdentifier(bid, status),)
        )
        return Decision(status, ack, dict(cache), home)
    new = dict(cache)
    if bu.lifetime == 0:
        new.pop((home, bid), None)
        return Decision(BaStatus.ACCEPTED, make_ack(bu, BaStatus.ACCEPTED, 0, bid), new, home)
    kind = pipe_option.kind_of(bu.options) or LEGACY_KIND
    if kind not in offered:
        extra = (pipe_option.offered_option(offered),)
        return _reject(bu, cache, BaStatus.FORWARDING_SETUP_FAILED, home, bid, extra=extra)
    prefixes = tuple(p.network for p in bu.prefixes)
    refused = _prefix_status(prefixes, known.prefixes)
    if refused is not None:
        return _reject(bu, cache, refused, home, bid)
    if care_of == settings.ha_address or any(care_of in p for p in prefixes):
        return _reject(bu, cache, BaStatus.ADMINISTRATIVELY_PROHIBITED, home, bid)
    units = min(bu.lifetime, lifetime_units(settings.max_lifetime))
    seconds = units * 4
    new[(home, bid)] = Binding(
        home, bid, care_of, prefixes, option.priority, bu.sequence, seconds, now + seconds, kind
    )
    confirm = (pipe_option.kind_option(kind),)
    answer = make_ack(bu, BaStatus.ACCEPTED, units, bid, extra=confirm) if bu.ack else None
    return Decision(BaStatus.ACCEPTED, answer, new, home)


def expire(cache: Cache, now: float) -> tuple[dict[BindingKey, Binding], list[Binding]]:
    """The bindings still valid at `now`, and the ones that ran out."""
    kept = {key: b for key, b in cache.items() if b.expires_at > now}
    gone = [b for key, b in cache.items() if key not in kept]
    return kept, gone


def next_expiry(cache: Cache) -> float | None:
    """When the next binding runs out, or None for an empty cache."""
    return min((b.expires_at for b in cache.values()), default=None)


def desired_pipes(cache: Cache, table_base: int) -> set[PipeRoute]:
    """Every MNP of every binding, in its BID's table, into the pipe towards its care-of address.

    Two mobile routers claiming one prefix under one BID would collide on a route; the later
    sequence cannot be compared across routers, so the lower home address wins, stably.
    """
    chosen: dict[tuple[int, IPv6Network], PipeRoute] = {}
    for key in sorted(cache, reverse=True):
        binding = cache[key]
        table = table_base + binding.bid
        for prefix in binding.prefixes:
            chosen[(table, prefix)] = PipeRoute(
                table, prefix, binding.care_of, binding.bid, binding.home, binding.pipe_kind
            )
    return set(chosen.values())
