"""Binding events from the home agent's own binding cache decisions. Pure: no MQTT, no clock.

The mobility-events service infers bindings from captured BU/BA signalling; the home agent
knows them first hand. Both speak the same `BindingEvent` model on the same topics (issue 5:
a mobility daemon publishing its own events is a second input with the same event model).

One cache entry (home address, BID) before and after a decision gives at most one event:

==================  ==================  ==============================================
before              after               event
==================  ==================  ==============================================
none                binding             registered
binding, CoA A      binding, CoA A      refreshed (an accepted BU always renews it)
binding, CoA A      binding, CoA B      coa-changed (previous A)
binding             none                deregistered (the CoA it had)
same                same                none
==================  ==================  ==============================================

A refused BU (status >= 128) leaves the cache as it was and gives one `rejected` per BID it
named, with the status and its RFC name; a binding that ran out gives `expired`. A router the
HA does not serve has no bus id and gives no event. Every event names the binding's pipe kind
(`pipe`): the one the cache entry holds, or for `rejected` the one the BU asked for (a BU
without the kind option asks for `LEGACY_KIND`, as the cache reads it). `now` stamps the
events (wall-clock seconds); the caller numbers them (`sequence`) when it publishes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from ipaddress import IPv6Address

from services.contracts.messages import BindingEvent, BindingEventKind
from services.mcoa.cache import LEGACY_KIND, Binding, BindingKey, Cache, Decision
from services.mobility_header import pipe_option
from services.mobility_header.codec import BindingUpdate
from services.mobility_header.status import ba_status_name, is_accepted

#: Home address -> the mobile router's id on the bus (`HaSettings.mr_ids`).
MrIds = Mapping[IPv6Address, str]


def entry_events(
    sender: str,
    mobile_router: str,
    old: Binding | None,
    new: Binding | None,
    *,
    now: float,
    status: int = 0,
) -> list[BindingEvent]:
    """The event of one cache entry going from `old` to `new` after an accepted BU."""
    if old == new:
        return []
    name = ba_status_name(status)
    if new is None:
        return (
            []
            if old is None
            else [
                BindingEvent(
                    sender=sender,
                    timestamp=now,
                    event=BindingEventKind.DEREGISTERED,
                    mobile_router=mobile_router,
                    bid=old.bid,
                    care_of_address=str(old.care_of),
                    lifetime_s=0,
                    status=status,
                    status_name=name,
                    pipe=old.pipe_kind,
                )
            ]
        )
    previous: str | None = None
    if old is None:
        kind = BindingEventKind.REGISTERED
    elif old.care_of == new.care_of:
        kind = BindingEventKind.REFRESHED
    else:
        kind, previous = BindingEventKind.COA_CHANGED, str(old.care_of)
    return [
        BindingEvent(
            sender=sender,
            timestamp=now,
            event=kind,
            mobile_router=mobile_router,
            bid=new.bid,
            care_of_address=str(new.care_of),
            previous_care_of_address=previous,
            lifetime_s=new.lifetime,
            status=status,
            status_name=name,
            pipe=new.pipe_kind,
        )
    ]


def decision_events(
    sender: str,
    ids: MrIds,
    old: Cache,
    decision: Decision,
    *,
    bu: BindingUpdate,
    source: IPv6Address,
    now: float,
) -> list[BindingEvent]:
    """The events of one decision on `bu` (from `source`), given the cache it was taken on."""
    home = decision.home
    mobile_router = None if home is None else ids.get(home)
    if home is None or mobile_router is None:
        return []
    if not is_accepted(decision.status):
        return _rejected(
            sender, mobile_router, home, old, bu=bu, source=source, status=decision.status, now=now
        )
    keys: set[BindingKey] = {k for k in (*old, *decision.cache) if k[0] == home}
    return [
        event
        for key in sorted(keys)
        for event in entry_events(
            sender,
            mobile_router,
            old.get(key),
            decision.cache.get(key),
            now=now,
            status=decision.status,
        )
    ]


def _rejected(
    sender: str,
    mobile_router: str,
    home: IPv6Address,
    old: Cache,
    *,
    bu: BindingUpdate,
    source: IPv6Address,
    status: int,
    now: float,
) -> list[BindingEvent]:
    events = []
    asked = pipe_option.kind_of(bu.options)
    kind = LEGACY_KIND if asked is None else asked
    pipe = kind if pipe_option.KIND_NAME.fullmatch(kind) else None
    for option in bu.binding_ids:
        if option.bid < 1:  # BID 0 is reserved; the contract's Bid starts at 1
            continue
        current = old.get((home, option.bid))
        care_of = source if option.care_of is None else option.care_of
        events.append(
            BindingEvent(
                sender=sender,
                timestamp=now,
                event=BindingEventKind.REJECTED,
                mobile_router=mobile_router,
                bid=option.bid,
                care_of_address=str(care_of),
                previous_care_of_address=None if current is None else str(current.care_of),
                lifetime_s=bu.lifetime_seconds,
                status=status,
                status_name=ba_status_name(status),
                pipe=pipe,
            )
        )
    return events


def expired_events(
    sender: str, ids: MrIds, gone: Iterable[Binding], now: float
) -> list[BindingEvent]:
    """One `expired` per binding that ran out (in (home, BID) order)."""
    return [
        BindingEvent(
            sender=sender,
            timestamp=now,
            event=BindingEventKind.EXPIRED,
            mobile_router=ids[b.home],
            bid=b.bid,
            care_of_address=str(b.care_of),
            lifetime_s=b.lifetime,
            pipe=b.pipe_kind,
        )
        for b in sorted(gone, key=lambda b: (b.home, b.bid))
        if b.home in ids
    ]
