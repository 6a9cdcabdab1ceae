"""The home agent side: receive BUs, answer BAs, keep one pipe per accepted BID.

One thread, one poll loop: a raw MH socket bound to the HA address and a stop pipe. Each BU
goes through the pure `cache.decide`; when the cache changes, the kernel is reconciled to
`desired_pipes` (idempotent, verified) before the BA leaves, so an accepted BA means the pipe
exists. A care-of address the HA cannot route to is refused with 143 (forwarding setup
failed) and the old binding stays. Bindings run out on their own clock (`expire`), and the
routes go with them. On stop every route and rule this agent owns is removed.
"""

from __future__ import annotations

import logging
import select
import socket
import time
from collections.abc import Callable
from ipaddress import IPv6Address
from typing import Any

from pyroute2 import IPRoute

from services.contracts.errors import KernelError
from services.mcoa import mhsocket, pipes
from services.mcoa.cache import (
    Binding,
    BindingKey,
    Decision,
    decide,
    desired_pipes,
    expire,
    make_ack,
)
from services.mcoa.cache import next_expiry as cache_next_expiry
from services.mcoa.config import HaSettings, McoaSettings
from services.mcoa.stopper import Stopper
from services.mobility_events.codec import BindingUpdate, decode
from services.mobility_events.errors import MobilityHeaderError
from services.mobility_events.status import BaStatus, ba_status_name

log = logging.getLogger(__name__)

_RESYNC_SECONDS = 5.0
_IFF_UP = 0x1
_LOOPBACK_INDEX = 1
_IFF_LOOPBACK = 0x8


class HaAgent:
    """Runs the home agent in the calling thread until `stopper` is set."""

    def __init__(
        self, settings: McoaSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if settings.ha is None:
            raise ValueError("HaAgent needs settings with role ha")
        self._settings = settings
        self._ha: HaSettings = settings.ha
        self._clock = clock
        self.cache: dict[BindingKey, Binding] = {}

    def _endpoint_oif(self, ipr: Any) -> int:
        """The device for the End.DT6 route of the HA address.

        The kernel turns a route via loopback into a reject route, so when the HA address sits
        on `lo` (the usual place) the first non-loopback device that is up carries the route;
        End.DT6 with a table ignores the device otherwise.
        """
        for msg in ipr.get_addr(family=socket.AF_INET6):
            index = int(msg["index"])
            if (
                IPv6Address(msg.get_attr("IFA_ADDRESS")) == self._ha.ha_address
                and index != _LOOPBACK_INDEX
            ):
                return index
        for msg in sorted(ipr.get_links(), key=lambda m: int(m["index"])):
            if int(msg["flags"]) & _IFF_UP and not int(msg["flags"]) & _IFF_LOOPBACK:
                return int(msg["index"])
        raise KernelError("decap route", "no non-loopback device is up")

    def _desired(
        self, ipr: Any, cache: dict[BindingKey, Binding], *, strict: bool
    ) -> set[pipes.RouteSpec] | None:
        """Routes for `cache`; an unreachable care-of address gives None if `strict`, else
        its pipe is left out until a later resync finds a way there."""
        s = self._settings
        wanted = pipes.decap_specs(s.decap_table, [self._ha.ha_address], self._endpoint_oif(ipr))
        for pipe in desired_pipes(cache, s.table_base):
            oif = pipes.oif_towards(ipr, pipe.care_of)
            if oif is None:
                if strict:
                    return None
                log.warning("HA: no route to care-of address %s, pipe left out", pipe.care_of)
                continue
            wanted.add(pipes.RouteSpec(pipe.table, pipe.prefix, oif, segment=pipe.care_of))
        return wanted

    def _apply(self, ipr: Any, cache: dict[BindingKey, Binding], *, strict: bool = False) -> bool:
        """Reconcile the kernel to `cache`; False (nothing changed) if `strict` and a care-of
        address is unreachable."""
        wanted = self._desired(ipr, cache, strict=strict)
        if wanted is None:
            return False
        pipes.ensure_routes(ipr, wanted)
        return True

    def _setup(self, ipr: Any) -> None:
        s = self._settings
        pipes.move_local_rule(ipr, s.local_rule_priority)
        rule = pipes.decap_rule(s.decap_table, s.decap_rule_priority)
        pipes.ensure_rules(ipr, {s.decap_rule_priority}, {rule})
        self._apply(ipr, self.cache)

    def teardown(self, ipr: Any) -> None:
        """Remove every route and rule this agent owns (the local rule stays moved)."""
        pipes.ensure_routes(ipr, set())
        pipes.ensure_rules(ipr, {self._settings.decap_rule_priority}, set())

    def _handle(self, ipr: Any, bu: BindingUpdate, source: IPv6Address, now: float) -> Decision:
        decision = decide(self._ha, self.cache, bu, source, now)
        if decision.status == BaStatus.ACCEPTED and decision.cache != self.cache:
            try:
                ok = self._apply(ipr, decision.cache, strict=True)
            except KernelError:
                log.exception("HA: forwarding setup failed, keeping the old bindings")
                ok = False
            if not ok:
                self._apply(ipr, self.cache)
                failed = BaStatus.FORWARDING_SETUP_FAILED
                bids = bu.binding_ids
                ack = make_ack(bu, failed, 0, bids[0].bid if bids else None)
                return Decision(failed, ack, dict(self.cache), decision.home)
        self.cache = decision.cache
        return decision

    def _receive(self, ipr: Any, sock: socket.socket) -> None:
        while (got := mhsocket.receive(sock)) is not None:
            data, source = got
            try:
                message = decode(data)
            except MobilityHeaderError as exc:
                log.warning("HA: undecodable Mobility Header from %s: %s", source, exc)
                continue
            if not isinstance(message, BindingUpdate):
                continue
            started = self._clock()
            decision = self._handle(ipr, message, source, started)
            bids = [b.bid for b in message.binding_ids]
            log.info(
                "HA: BU seq %d from %s (home %s, BIDs %s, lifetime %d s): %d %s in %.1f ms",
                message.sequence,
                source,
                decision.home,
                bids,
                message.lifetime_seconds,
                decision.status,
                ba_status_name(decision.status),
                (self._clock() - started) * 1000,
            )
            if decision.ack is not None:
                mhsocket.send(sock, decision.ack, source)

    def _expire(self, ipr: Any, now: float) -> None:
        kept, gone = expire(self.cache, now)
        if not gone:
            return
        for b in gone:
            log.info("HA: binding of %s BID %d (CoA %s) expired", b.home, b.bid, b.care_of)
        self.cache = kept
        self._apply(ipr, self.cache)

    def run(self, stopper: Stopper) -> None:
        """Serve until stopped; kernel errors and unexpected exceptions end the agent loudly."""
        ipr = IPRoute()
        sock = mhsocket.open_mh(self._ha.ha_address)
        try:
            self._setup(ipr)
            log.info("HA: serving on %s", self._ha.ha_address)
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLIN)
            poller.register(stopper.fileno(), select.POLLIN)
            resync_at = self._clock() + _RESYNC_SECONDS
            while not stopper.stopped:
                now = self._clock()
                wake = min(t for t in (cache_next_expiry(self.cache), resync_at) if t is not None)
                ready = {fd for fd, _ in poller.poll(max(0.0, wake - now) * 1000)}
                if stopper.stopped:
                    break
                if sock.fileno() in ready:
                    self._receive(ipr, sock)
                now = self._clock()
                self._expire(ipr, now)
                if now >= resync_at:
                    # An admin down deletes routes through the device: put them back.
                    self._apply(ipr, self.cache)
                    resync_at = now + _RESYNC_SECONDS
        finally:
            try:
                self.teardown(ipr)
            finally:
                sock.close()
                ipr.close()
