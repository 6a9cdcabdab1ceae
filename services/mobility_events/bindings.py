"""The binding view: observed BU/BA signalling in, binding events out. Pure: no sockets, no MQTT.

A binding is one (mobile router, BID) pair with the care-of address the home agent accepted
for it. Binding Updates are remembered as pending until the Binding Acknowledgement with the
same sequence number comes back between the same two addresses (BU source/destination = BA
destination/source); only the acknowledgement changes the view, so a refused or unanswered BU
never looks like a registration. Every step returns the events it caused as a list and never
sends them: the service publishes, tests compare lists.

Who the mobile router is: BUs here are sent from the care-of address without a Home Address
option (docs/kernel.md), so the packet does not name the home address. The caller passes an
`Identify` policy; the default, `MnpIdentity`, recognises the router by the Mobile Network
Prefix options of the BU (configured MR id -> prefixes), then by a configured care-of address.

Which bindings a BU asks for: one per Binding Identifier option (MCoA bulk registration, RFC
5648); a BID option's own care-of address wins, else the Alternate Care-of Address option,
else the packet's source. A BU without BID options stands for `default_bid` (None: ignored).
The BA may override the status per BID in its own BID options (a BID status of 0 means "the
BA's status", RFC 5648 6.1).

An acknowledgement may be seen before the update it answers: the service reads incoming
signalling from one socket and its own outgoing BAs from another, and can drain the second
first. So a BA that matches no pending BU is held for `EARLY_ACK_S`; a BU arriving within that
time that it answers settles at once with it. Only a BA still unmatched then counts as
unmatched (at most `MAX_EARLY_ACKS` are held: a flood of stray BAs costs bounded memory).

The pipe kind (`BindingEvent.pipe`): the kind an accepted BA confirms in the project's
vendor-specific option (services/mobility_header/pipe_option.py), else the kind the BU asked
for in it; a rejected BU's event names the kind asked for. Signalling without the option (a
plain NEMO router, another vendor's stack) leaves it unknown (None): what a home agent this
service does not run builds for such a BU is not visible in the signalling.

Time is the `now` argument everywhere (seconds; the service passes wall-clock time, which also
stamps the events), so tests step a fake clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network

from services.contracts.messages import BindingEvent, BindingEventKind
from services.mobility_header import pipe_option
from services.mobility_header.codec import (
    BindingAcknowledgement,
    BindingError,
    BindingUpdate,
    Message,
)
from services.mobility_header.mh_options import AlternateCareOfAddress, options_of
from services.mobility_header.status import ba_status_name, is_accepted

#: Maps (packet source, BU) to the mobile router's id, or None when the BU is not ours.
Identify = Callable[[IPv6Address, BindingUpdate], str | None]

DEFAULT_PENDING_TIMEOUT_S = 10.0
#: How long a BA that answers no known BU waits for its BU (seen late from another socket).
EARLY_ACK_S = 0.5
MAX_EARLY_ACKS = 1024


class MnpIdentity:
    """The default `Identify`: a BU's Mobile Network Prefix option names its router.

    A prefix option identifies router R when it lies inside one of R's configured prefixes.
    A BU without a matching prefix option is identified by its source address through
    `care_of` (fixed care-of address -> MR id), else it is not ours.
    """

    def __init__(
        self,
        routers: Mapping[str, Iterable[IPv6Network]],
        care_of: Mapping[IPv6Address, str] | None = None,
    ) -> None:
        self._prefixes = [(net, mr) for mr, nets in routers.items() for net in nets]
        self._care_of = dict(care_of or {})

    def __call__(self, src: IPv6Address, bu: BindingUpdate) -> str | None:
        for option in bu.prefixes:
            network = option.network
            for configured, mr in self._prefixes:
                if network.subnet_of(configured):
                    return mr
        return self._care_of.get(src)


@dataclass(frozen=True, slots=True)
class Binding:
    """One accepted binding as last acknowledged; times are the caller's `now` values."""

    mobile_router: str
    bid: int
    care_of: str
    lifetime_s: int
    status: int
    registered_at: float
    refreshed_at: float
    expires_at: float
    sequence: int
    pipe: str | None = None


@dataclass(frozen=True, slots=True)
class _Request:
    """One BID a BU asks for, and the care-of address it names for it."""

    bid: int
    care_of: str


_Key = tuple[IPv6Address, IPv6Address, int]  # (BU source, BU destination, sequence)


@dataclass(frozen=True, slots=True)
class _Pending:
    mobile_router: str
    sequence: int
    lifetime_s: int
    seen_at: float
    requests: tuple[_Request, ...]
    keys: tuple[_Key, ...]
    pipe: str | None = None


@dataclass
class ViewStats:
    """What the view saw and what it could not use, since it was made."""

    updates: int = 0
    acks: int = 0
    errors: int = 0
    updates_unidentified: int = 0
    updates_without_bid: int = 0
    acks_unmatched: int = 0
    pending_expired: int = 0


@dataclass
class BindingView:
    """Bindings keyed by (MR, BID), kept from observed BUs and BAs; returns BindingEvents.

    `handover_started_on_new_coa`: emit `handover-started` when a BU names a new care-of
    address for a live binding (a deregistration BU for a live binding always emits it).
    A BU unanswered for `pending_timeout_s` is forgotten (counted in `stats`).
    """

    node: str
    identify: Identify
    handover_started_on_new_coa: bool = True
    pending_timeout_s: float = DEFAULT_PENDING_TIMEOUT_S
    default_bid: int | None = 1
    stats: ViewStats = field(default_factory=ViewStats, init=False)
    _bindings: dict[tuple[str, int], Binding] = field(default_factory=dict, init=False)
    _pending: dict[_Key, _Pending] = field(default_factory=dict, init=False)
    #: BAs seen before their BU: key -> (seen at, the BA).
    _early: dict[_Key, tuple[float, BindingAcknowledgement]] = field(
        default_factory=dict, init=False
    )
    _next_deadline: float = field(default=float("inf"), init=False)
    _sequence: int = field(default=0, init=False)

    # --- queries ---------------------------------------------------------------------------

    def binding(self, mobile_router: str, bid: int) -> Binding | None:
        """The binding of (MR, BID) as last acknowledged, expired ones included until `tick`."""
        return self._bindings.get((mobile_router, bid))

    def bindings(self) -> tuple[Binding, ...]:
        """Every binding, ordered by (MR, BID)."""
        return tuple(self._bindings[key] for key in sorted(self._bindings))

    @property
    def pending_count(self) -> int:
        """BUs waiting for their acknowledgement."""
        return len({id(p) for p in self._pending.values()})

    # --- steps -----------------------------------------------------------------------------

    def observe(
        self, now: float, src: IPv6Address, dst: IPv6Address, message: Message
    ) -> list[BindingEvent]:
        """Dispatch one decoded message by type (Binding Errors are only counted)."""
        if isinstance(message, BindingUpdate):
            return self.observe_bu(now, src, dst, message)
        if isinstance(message, BindingAcknowledgement):
            return self.observe_ba(now, src, dst, message)
        if isinstance(message, BindingError):
            self.stats.errors += 1
        return self.tick(now)

    def observe_bu(
        self, now: float, src: IPv6Address, dst: IPv6Address, bu: BindingUpdate
    ) -> list[BindingEvent]:
        """Remember the BU as pending; maybe announce a handover. Bindings do not change yet."""
        events = self.tick(now)
        self.stats.updates += 1
        mr = self.identify(src, bu)
        if mr is None:
            self.stats.updates_unidentified += 1
            return events
        requests = self._requests(src, bu)
        if not requests:
            self.stats.updates_without_bid += 1
            return events
        keys: list[_Key] = [(src, dst, bu.sequence)]
        for alternate in options_of(bu.options, AlternateCareOfAddress):
            if alternate.address != src:
                keys.append((alternate.address, dst, bu.sequence))
        previous = self._pending.get(keys[0])
        pending = _Pending(
            mr,
            bu.sequence,
            bu.lifetime_seconds,
            now,
            requests,
            tuple(keys),
            pipe_option.kind_name(bu.options),
        )
        if previous is not None:
            self._drop_pending(previous)
        for key in keys:
            self._pending[key] = pending
        retransmission = (
            previous is not None
            and previous.requests == requests
            and previous.lifetime_s == pending.lifetime_s
        )
        if not retransmission:
            events.extend(self._handovers(now, pending))
        early = self._early.pop(keys[0], None)
        if early is not None:
            events.extend(self._answer(early[0], pending, early[1]))
        return events

    def observe_ba(
        self, now: float, src: IPv6Address, dst: IPv6Address, ba: BindingAcknowledgement
    ) -> list[BindingEvent]:
        """Settle the pending BU this BA answers: register, refresh, move, drop or reject."""
        events = self.tick(now)
        self.stats.acks += 1
        key = (dst, src, ba.sequence)
        pending = self._pending.get(key)
        if pending is None:
            if len(self._early) >= MAX_EARLY_ACKS:
                del self._early[next(iter(self._early))]
                self.stats.acks_unmatched += 1
            self._early[key] = (now, ba)
            return events
        return events + self._answer(now, pending, ba)

    def _answer(
        self, now: float, pending: _Pending, ba: BindingAcknowledgement
    ) -> list[BindingEvent]:
        """Settle `pending` with the BA that answers it."""
        self._drop_pending(pending)
        per_bid = {option.bid: option.status for option in ba.binding_ids if option.status}
        return [
            self._settle(now, pending, request, per_bid.get(request.bid, ba.status), ba)
            for request in pending.requests
        ]

    def tick(self, now: float) -> list[BindingEvent]:
        """Expire bindings whose lifetime ran out and forget BUs that were never answered."""
        events: list[BindingEvent] = []
        if now >= self._next_deadline:
            expired = sorted(
                (b for b in self._bindings.values() if b.expires_at <= now),
                key=lambda b: (b.expires_at, b.mobile_router, b.bid),
            )
            for binding in expired:
                del self._bindings[(binding.mobile_router, binding.bid)]
                events.append(
                    self._event(
                        now,
                        BindingEventKind.EXPIRED,
                        binding.mobile_router,
                        binding.bid,
                        care_of=binding.care_of,
                        lifetime_s=binding.lifetime_s,
                        pipe=binding.pipe,
                    )
                )
            self._next_deadline = min(
                (b.expires_at for b in self._bindings.values()), default=float("inf")
            )
        late = [key for key, (seen, _ba) in self._early.items() if now - seen > EARLY_ACK_S]
        for key in late:
            del self._early[key]
            self.stats.acks_unmatched += 1
        stale = {
            id(p): p for p in self._pending.values() if now - p.seen_at > self.pending_timeout_s
        }
        for pending in stale.values():
            self._drop_pending(pending)
            self.stats.pending_expired += 1
        return events

    # --- helpers ---------------------------------------------------------------------------

    def _requests(self, src: IPv6Address, bu: BindingUpdate) -> tuple[_Request, ...]:
        alternates = options_of(bu.options, AlternateCareOfAddress)
        fallback = str(alternates[0].address if alternates else src)
        bids = bu.binding_ids
        if not bids:
            if self.default_bid is None:
                return ()
            return (_Request(self.default_bid, fallback),)
        return tuple(
            _Request(option.bid, fallback if option.care_of is None else str(option.care_of))
            for option in bids
            if option.bid >= 1  # BID 0 is reserved; the contract's Bid starts at 1
        )

    def _handovers(self, now: float, pending: _Pending) -> list[BindingEvent]:
        events: list[BindingEvent] = []
        for request in pending.requests:
            current = self._bindings.get((pending.mobile_router, request.bid))
            if current is None or current.expires_at <= now:
                continue
            deregistration = pending.lifetime_s == 0
            moving = self.handover_started_on_new_coa and request.care_of != current.care_of
            if deregistration or moving:
                events.append(
                    self._event(
                        now,
                        BindingEventKind.HANDOVER_STARTED,
                        pending.mobile_router,
                        request.bid,
                        care_of=request.care_of,
                        previous=current.care_of,
                        lifetime_s=pending.lifetime_s,
                        pipe=pending.pipe or current.pipe,
                    )
                )
        return events

    def _settle(
        self,
        now: float,
        pending: _Pending,
        request: _Request,
        status: int,
        ba: BindingAcknowledgement,
    ) -> BindingEvent:
        mr, bid = pending.mobile_router, request.bid
        current = self._bindings.get((mr, bid))
        previous = None if current is None else current.care_of
        name = ba_status_name(status)
        if not is_accepted(status):
            # The old binding, if any, stays as it was: the HA refused the change only.
            return self._event(
                now,
                BindingEventKind.REJECTED,
                mr,
                bid,
                care_of=request.care_of,
                previous=previous,
                lifetime_s=pending.lifetime_s,
                status=status,
                status_name=name,
                pipe=pending.pipe,
            )
        if pending.lifetime_s == 0 or ba.lifetime == 0:
            self._bindings.pop((mr, bid), None)
            return self._event(
                now,
                BindingEventKind.DEREGISTERED,
                mr,
                bid,
                care_of=previous if previous is not None else request.care_of,
                lifetime_s=0,
                status=status,
                status_name=name,
                pipe=current.pipe if current is not None else pending.pipe,
            )
        lifetime = ba.lifetime_seconds
        pipe = pipe_option.kind_name(ba.options) or pending.pipe
        fresh = current is None or current.expires_at <= now
        self._bindings[(mr, bid)] = Binding(
            mobile_router=mr,
            bid=bid,
            care_of=request.care_of,
            lifetime_s=lifetime,
            status=status,
            registered_at=now if fresh or current is None else current.registered_at,
            refreshed_at=now,
            expires_at=now + lifetime,
            sequence=pending.sequence,
            pipe=pipe,
        )
        self._next_deadline = min(self._next_deadline, now + lifetime)
        if fresh:
            kind, previous = BindingEventKind.REGISTERED, None
        elif previous == request.care_of:
            kind, previous = BindingEventKind.REFRESHED, None
        else:
            kind = BindingEventKind.COA_CHANGED
        return self._event(
            now,
            kind,
            mr,
            bid,
            care_of=request.care_of,
            previous=previous,
            lifetime_s=lifetime,
            status=status,
            status_name=name,
            pipe=pipe,
        )

    def _drop_pending(self, pending: _Pending) -> None:
        for key in pending.keys:
            if self._pending.get(key) is pending:
                del self._pending[key]

    def _event(
        self,
        now: float,
        kind: BindingEventKind,
        mobile_router: str,
        bid: int,
        *,
        care_of: str | None = None,
        previous: str | None = None,
        lifetime_s: int | None = None,
        status: int | None = None,
        status_name: str | None = None,
        pipe: str | None = None,
    ) -> BindingEvent:
        self._sequence += 1
        return BindingEvent(
            sender=self.node,
            timestamp=now,
            sequence=self._sequence,
            event=kind,
            mobile_router=mobile_router,
            bid=bid,
            care_of_address=care_of,
            previous_care_of_address=previous,
            lifetime_s=lifetime_s,
            status=status,
            status_name=status_name,
            pipe=pipe,
        )
