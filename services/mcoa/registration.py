"""The mobile router's registration of one link (one BID), as a pure state machine.

Each link registers its care-of address on its own: a BU on start, on a care-of address
change and before the granted lifetime runs out; a retransmission with a new sequence number
(RFC 6275 11.8) when no BA came within the timeout, which doubles each time up to a cap; and a
deregistration (lifetime 0) on shutdown. `Registration` only decides: its methods take `now`
and return the BU to send (or None), so the agent's loop sends and tests step a fake clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv6Address

from services.mcoa.config import LinkSettings, MrSettings
from services.mcoa.identity import identifier_option
from services.mobility_header import pipe_option
from services.mobility_header.codec import (
    BindingAcknowledgement,
    BindingUpdate,
    lifetime_units,
)
from services.mobility_header.mh_options import (
    BindingIdentifier,
    MobileNetworkPrefix,
    MobilityOption,
)
from services.mobility_header.status import BaStatus


def build_bu(
    mr: MrSettings,
    link: LinkSettings,
    care_of: IPv6Address,
    sequence: int,
    lifetime: int,
    *,
    kind: str | None = None,
) -> BindingUpdate:
    """A NEMO home registration (flags A, H, R; K clear) of one BID, `lifetime` in seconds,
    naming pipe kind `kind` (none: a plain NEMO BU, which means IPv6-in-IPv6)."""
    options: tuple[MobilityOption, ...] = (
        identifier_option(mr.home_address),
        *(MobileNetworkPrefix(p.network_address, p.prefixlen) for p in mr.prefixes),
        BindingIdentifier(link.bid, priority=link.priority, care_of=care_of),
        *(() if kind is None else (pipe_option.kind_option(kind),)),
    )
    return BindingUpdate(
        sequence=sequence & 0xFFFF,
        lifetime=lifetime_units(lifetime),
        ack=True,
        home_registration=True,
        mobile_router=True,
        options=options,
    )


@dataclass
class Sequencer:
    """One sequence counter for all BUs of the mobile router, so each is newer than the last."""

    value: int = 0

    def next(self) -> int:
        self.value = (self.value + 1) & 0xFFFF
        return self.value

    def resume_after(self, sequence: int) -> None:
        """The HA told us (status 135) where its window is: continue after it."""
        self.value = sequence & 0xFFFF


@dataclass
class Registration:
    """Where one link's binding stands: its care-of address, the BU in flight, the refresh."""

    mr: MrSettings
    link: LinkSettings
    seq: Sequencer
    pipe_kind: str | None = None
    care_of: IPv6Address | None = None
    pending: int | None = None
    pending_lifetime: int = 0
    attempts: int = 0
    retry_at: float | None = None
    refresh_at: float | None = None
    registered: bool = False
    granted: int = 0
    history: list[tuple[float, int]] = field(default_factory=list)

    def _send(self, now: float, lifetime: int, *, retry: bool = False) -> BindingUpdate | None:
        if self.care_of is None:
            return None
        self.attempts = self.attempts + 1 if retry else 0
        self.pending = self.seq.next()
        self.pending_lifetime = lifetime
        backoff = self.mr.retransmit_initial * 2 ** min(self.attempts, self.mr.retransmit_max)
        self.retry_at = now + backoff
        return build_bu(
            self.mr, self.link, self.care_of, self.pending, lifetime, kind=self.pipe_kind
        )

    def start(self, care_of: IPv6Address | None, now: float) -> BindingUpdate | None:
        """Begin (or restart) registering `care_of`; None when the link has no address."""
        self.care_of = care_of
        self.registered = False
        self.refresh_at = None
        if care_of is None:
            self.pending = None
            self.retry_at = None
            return None
        return self._send(now, self.mr.lifetime)

    def deregister(self, now: float) -> BindingUpdate | None:
        """The BU with lifetime 0 that removes this binding at the HA."""
        self.refresh_at = None
        return self._send(now, 0)

    def on_ack(self, ba: BindingAcknowledgement, now: float) -> BindingUpdate | None:
        """Fold in a BA for this BID; return a BU to send at once (after status 135)."""
        if ba.status == BaStatus.SEQUENCE_NUMBER_OUT_OF_WINDOW:
            self.seq.resume_after(ba.sequence)
            return self._send(now, self.pending_lifetime)
        if self.pending is None or ba.sequence != self.pending:
            return None
        self.history.append((now, ba.status))
        self.pending = None
        self.retry_at = None
        self.attempts = 0
        if not ba.accepted or self.pending_lifetime == 0:
            self.registered = False
            self.refresh_at = (
                None
                if self.pending_lifetime == 0
                else now + self.mr.retransmit_initial * 2**self.mr.retransmit_max
            )
            return None
        self.registered = True
        self.granted = ba.lifetime_seconds
        self.refresh_at = now + self.granted * self.mr.refresh_fraction
        return None

    @property
    def state(self) -> str:
        """Where the binding stands, for metrics: `registered` (accepted, refreshes included),
        `registering` (a BU in flight, no binding yet), `unregistered` (a care-of address but
        no binding: refused or deregistered, waiting) or `no-care-of`."""
        if self.registered:
            return "registered"
        if self.pending is not None:
            return "registering"
        return "no-care-of" if self.care_of is None else "unregistered"

    def deadline(self) -> float | None:
        """When `tick` next has something to do."""
        times = [t for t in (self.retry_at, self.refresh_at) if t is not None]
        return min(times, default=None)

    def tick(self, now: float) -> BindingUpdate | None:
        """A retransmission or a refresh, if one is due at `now`."""
        if self.retry_at is not None and now >= self.retry_at:
            return self._send(now, self.pending_lifetime, retry=True)
        if self.refresh_at is not None and now >= self.refresh_at:
            self.refresh_at = None
            return self._send(now, self.mr.lifetime)
        return None
