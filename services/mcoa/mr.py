"""The mobile router side: register each link's care-of address, keep each BID's uplink pipe.

One thread, one poll loop over: a netlink socket for address and link events, one raw MH
socket per link (bound to that link's care-of address and device, reopened when the address
changes), and the stop pipe. Registration decisions live in `registration.Registration`; this
module only feeds it events and the clock and sends what it returns.

Kernel state kept per link that has a care-of address (BID n, table `table_base + n`;
`pipe_kinds.mr_link`): the pipe of the MR's kind as the table's default route (the uplink
pipe the PREM's fwmark rules lead to), `<HA>/128 via <gateway> dev <link>` in the same table,
and the rule `from <CoA> to <HA> lookup <table>` before the fwmark rules, so the outer packet
(which keeps its mark) and the BUs leave by their own link; plus what the kind needs to
receive the downlink pipe. The kernel is updated before the BU for a link's first address is
sent, so the HA's pipe never points at an address we cannot receive on; when a link's address
changes (the old one is gone, so the HA's pipe already points nowhere), only the new
address's rule comes before the BU, the pipe's device and routes right after. Every BU
names the kind; a home agent that does not offer it refuses with 143 and says what it offers,
which is logged. On stop: deregister (lifetime 0), wait briefly for the BAs, remove what we
own.

What it does is counted in `McoaMrMetrics` (BUs by kind, BAs by status, registration round
trips, link states, pipes); `agent.run` serves them when `metrics_listen` is set.
"""

from __future__ import annotations

import errno
import logging
import select
import socket
import time
from collections.abc import Callable, Iterable
from ipaddress import IPv6Address
from typing import Any

from pyroute2 import IPRoute, IPRSocket
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTMGRP_IPV6_IFADDR, RTMGRP_LINK

from services.mcoa import kernel, mhsocket, pipe_kinds, pipes
from services.mcoa.config import McoaSettings, MrSettings
from services.mcoa.metrics import McoaMrMetrics
from services.mcoa.registration import Registration, Sequencer
from services.mobility_header import pipe_option
from services.mobility_header.codec import BindingAcknowledgement, BindingUpdate, decode
from services.mobility_header.errors import MobilityHeaderError
from services.wakeup import Stopper

log = logging.getLogger(__name__)

_IFA_F_DADFAILED = 0x08
_IFA_F_TENTATIVE = 0x40
_UNUSABLE = _IFA_F_DADFAILED | _IFA_F_TENTATIVE
_SCOPE_GLOBAL = 0
_RESYNC_SECONDS = 5.0
_DEREGISTER_WAIT = 1.0


def choose_care_of(
    current: IPv6Address | None, candidates: Iterable[IPv6Address]
) -> IPv6Address | None:
    """Keep the current care-of address while it exists, else take the lowest candidate."""
    found = sorted(candidates)
    if current in found:
        return current
    return found[0] if found else None


def global_addresses(ipr: Any) -> dict[int, list[IPv6Address]]:
    """Usable global IPv6 addresses per ifindex (tentative and DAD-failed ones left out)."""
    out: dict[int, list[IPv6Address]] = {}
    for msg in ipr.get_addr(family=socket.AF_INET6):
        flags = msg.get_attr("IFA_FLAGS")
        flags = int(msg["flags"] if flags is None else flags)
        if msg["scope"] != _SCOPE_GLOBAL or flags & _UNUSABLE:
            continue
        out.setdefault(int(msg["index"]), []).append(IPv6Address(msg.get_attr("IFA_ADDRESS")))
    return out


class MrAgent:
    """Runs the mobile router in the calling thread until `stopper` is set, building pipes of
    `kind` (found by the caller from the setting and the kernel:
    `capabilities.choose_pipe_kind`)."""

    def __init__(
        self,
        settings: McoaSettings,
        *,
        kind: str,
        clock: Callable[[], float] = time.monotonic,
        metrics: McoaMrMetrics | None = None,
    ) -> None:
        if settings.mr is None:
            raise ValueError("MrAgent needs settings with role mr")
        self._settings = settings
        self._mr: MrSettings = settings.mr
        self.kind = kind
        self._clock = clock
        seq = Sequencer()
        self.registrations = {
            link.bid: Registration(self._mr, link, seq, kind) for link in self._mr.links
        }
        self._sockets: dict[int, socket.socket] = {}
        self._ifindex: dict[int, int] = {}
        self._mtu: dict[int, int] = {}
        #: The kernel state last applied and verified (None: unknown, check everything).
        self._applied: pipe_kinds.KernelState | None = None
        self.metrics = McoaMrMetrics(settings.node) if metrics is None else metrics
        #: BID -> (sequence, sent at) of the last BU sent, to time the BA answering it.
        self._sent: dict[int, tuple[int, float]] = {}

    @property
    def _priorities(self) -> set[int]:
        return {self._settings.decap_rule_priority, self._mr.source_rule_priority}

    def _desired(self) -> pipe_kinds.KernelState:
        present = [
            pipe_kinds.MrLink(reg.link, reg.care_of, self._mtu.get(bid, 1500))
            for bid, reg in self.registrations.items()
            if reg.care_of is not None and bid in self._ifindex
        ]
        return pipe_kinds.mr_state(self._settings, self.kind, present)

    def _reconcile(self, ipr: Any, *, full: bool = False) -> None:
        """Bring the kernel to the links' pipes (`full`: check every part again)."""
        state = self._desired()
        known, self._applied = (None if full else self._applied), None
        kernel.apply_state(ipr, state, self._priorities, known)
        self._applied = state
        self.metrics.pipes.set(state.pipes)

    def _export_states(self) -> None:
        counts: dict[str, int] = {}
        for reg in self.registrations.values():
            counts[reg.state] = counts.get(reg.state, 0) + 1
        self.metrics.set_bindings(counts)

    def _send(self, bid: int, bu: BindingUpdate | None, kind: str) -> None:
        """Send `bu` (a `BU_KINDS` kind, for metrics) on BID `bid`'s link, if there is one."""
        sock = self._sockets.get(bid)
        if bu is None or sock is None:
            return
        try:
            mhsocket.send(sock, bu, self._mr.ha_address)
        except OSError as exc:
            log.warning("MR: BU seq %d on BID %d not sent: %s", bu.sequence, bid, exc)
            return
        self._sent[bid] = (bu.sequence, self._clock())
        self.metrics.updates_sent.labels("deregister" if bu.lifetime == 0 else kind).inc()
        log.info(
            "MR: BU seq %d BID %d CoA %s lifetime %d s sent",
            bu.sequence,
            bid,
            self.registrations[bid].care_of,
            bu.lifetime_seconds,
        )

    def _refresh_addresses(
        self, ipr: Any, poller: select.poll, *, links_changed: bool = True
    ) -> None:
        """Re-read interfaces and addresses; re-register every link whose CoA changed.

        The kernel is reconciled when a care-of address, a link's index or MTU changed, or
        `links_changed` (a link event: an admin down takes the link's routes). Not after
        address events that change no care-of address (a new address beside the one in use):
        in a make-before-break handover that reconciliation ran in the moments before the old
        address went, when the agent should be free to send the BU."""
        before = (dict(self._ifindex), dict(self._mtu))
        links = {str(m.get_attr("IFLA_IFNAME")): m for m in ipr.get_links()}
        addresses = global_addresses(ipr)
        changed: list[int] = []
        moved: list[int] = []  # links that had a care-of address and now have another
        # (a new one implies the link's index is known: its addresses were found by it)
        for bid, reg in self.registrations.items():
            msg = links.get(reg.link.interface)
            index: int | None = None
            if msg is None:
                self._ifindex.pop(bid, None)
            else:
                index = self._ifindex[bid] = int(msg["index"])
                self._mtu[bid] = int(msg.get_attr("IFLA_MTU"))
            new = choose_care_of(reg.care_of, addresses.get(index, []) if index else [])
            if new != reg.care_of or (new is not None and bid not in self._sockets):
                changed.append(bid)
                old = self._sockets.pop(bid, None)
                if old is not None:
                    poller.unregister(old.fileno())
                    old.close()
                if reg.care_of is not None and new is not None:
                    moved.append(bid)
                reg.care_of = new
                if new is not None:
                    sock = mhsocket.open_mh(new, reg.link.interface)
                    self._sockets[bid] = sock
                    poller.register(sock.fileno(), select.POLLIN)
                log.info("MR: BID %d on %s: care-of address %s", bid, reg.link.interface, new)
        if moved:
            # The old address is gone: until the BU, the HA's pipe points at an address we
            # cannot receive on. The BU only needs the rule that sends it from the new address
            # out of its own link (its table's route to the HA stays); the pipe's device and
            # routes follow after it, while the BU travels and the HA handles it (care-of
            # address seen -> BU sent: about 25 ms before, 10 ms after, in bench.reaction (c)'s
            # logs).
            pipes.ensure_rules(ipr, self._priorities, set(self._desired().rules))
            self._register(ipr, moved)
        if changed or links_changed or before != (self._ifindex, self._mtu):
            self._reconcile(ipr)
        self._register(ipr, [bid for bid in changed if bid not in moved])
        self._export_states()

    def _register(self, ipr: Any, bids: list[int]) -> None:
        """Send a BU for the care-of address of each link of `bids` (none if it has none)."""
        now = self._clock()
        for bid in bids:
            reg = self.registrations[bid]
            if reg.care_of is not None and bid in self._ifindex:
                _forget_next_hop(ipr, reg.link.gateway, self._ifindex[bid])
            self._send(bid, reg.start(reg.care_of, now), "register")

    def _on_ack(self, bid: int, ba: BindingAcknowledgement) -> None:
        ids = ba.binding_ids
        target = ids[0].bid if ids else bid
        reg = self.registrations.get(target)
        if reg is None:
            return
        now = self._clock()
        self.metrics.acks_received.labels(str(int(ba.status))).inc()
        sent = self._sent.get(target)
        if ba.accepted and sent is not None and sent[0] == ba.sequence:
            self.metrics.registration_seconds.observe(now - sent[1])
        log.info(
            "MR: BA seq %d BID %d status %d (%s) lifetime %d s",
            ba.sequence,
            target,
            ba.status,
            ba.status_name,
            ba.lifetime_seconds,
        )
        offered = pipe_option.offered_in(ba.options)
        if offered is not None:
            log.error(
                "MR: the HA refused BID %d: this router builds %s pipes, the HA offers %s; "
                "set the same `pipe` on both ends (multinet doctor shows what each kernel has)",
                target,
                self.kind,
                ", ".join(offered) or "none",
            )
        self._send(target, reg.on_ack(ba, now), "retransmit")

    def _receive(self, ready: set[int]) -> None:
        for bid, sock in list(self._sockets.items()):
            if sock.fileno() not in ready:
                continue
            while (got := mhsocket.receive(sock)) is not None:
                try:
                    message = decode(got[0])
                except MobilityHeaderError as exc:
                    log.warning("MR: undecodable Mobility Header from %s: %s", got[1], exc)
                    continue
                if isinstance(message, BindingAcknowledgement):
                    self._on_ack(bid, message)

    def _deadline(self) -> float:
        times = [r.deadline() for r in self.registrations.values()]
        return min((t for t in times if t is not None), default=self._clock() + _RESYNC_SECONDS)

    def _deregister(self, poller: select.poll) -> None:
        now = self._clock()
        for bid, reg in self.registrations.items():
            if reg.care_of is not None:
                self._send(bid, reg.deregister(now), "deregister")
        end = now + _DEREGISTER_WAIT
        while any(r.pending is not None for r in self.registrations.values()):
            left = end - self._clock()
            if left <= 0:
                break
            ready = {fd for fd, _ in poller.poll(left * 1000)}
            self._receive(ready)

    def run(self, stopper: Stopper) -> None:
        """Register until stopped, then deregister and remove the kernel state we own."""
        ipr = IPRoute()
        events = IPRSocket()
        poller = select.poll()
        try:
            events.bind(groups=RTMGRP_IPV6_IFADDR | RTMGRP_LINK)
            if pipe_kinds.uses_decap_rule([self.kind]):
                pipes.move_local_rule(ipr, self._settings.local_rule_priority)
            log.info("MR: pipe kind %s", self.kind)
            poller.register(events.fileno(), select.POLLIN)
            poller.register(stopper.fileno(), select.POLLIN)
            self._refresh_addresses(ipr, poller)
            resync_at = self._clock() + _RESYNC_SECONDS
            while not stopper.stopped:
                wait = max(0.0, min(self._deadline(), resync_at) - self._clock())
                ready = {fd for fd, _ in poller.poll(wait * 1000)}
                if stopper.stopped:
                    break
                if events.fileno() in ready:
                    links_changed = self._drain(events)
                    self._refresh_addresses(ipr, poller, links_changed=links_changed)
                self._receive(ready)
                now = self._clock()
                for bid, reg in self.registrations.items():
                    bu = reg.tick(now)
                    self._send(bid, bu, "retransmit" if reg.attempts else "refresh")
                if now >= resync_at:
                    self._reconcile(ipr, full=True)
                    resync_at = now + _RESYNC_SECONDS
                self._export_states()
            self._deregister(poller)
        finally:
            try:
                kernel.remove_all(ipr, self._priorities)
                self.metrics.pipes.set(0)
            finally:
                for sock in self._sockets.values():
                    sock.close()
                events.close()
                ipr.close()

    @staticmethod
    def _drain(events: Any) -> bool:
        """Read every queued event (one re-read of the addresses covers them all); True if
        one was a link event rather than an address event."""
        poller = select.poll()
        poller.register(events.fileno(), select.POLLIN)
        links_changed = False
        while poller.poll(0):
            for msg in events.get():
                links_changed |= msg.get("event") in ("RTM_NEWLINK", "RTM_DELLINK")
        return links_changed


def _forget_next_hop(ipr: Any, gateway: object, ifindex: int) -> None:
    """Make the BU's next hop be resolved again, with a Neighbour Solicitation sourced from the
    new care-of address: the access side then learns the new address's link-layer address from
    it (RFC 4861 7.2.3) and its BA goes out at once. Without this the BA waited in the peer's
    neighbour queue for a full retransmission timer (1 s, measured)."""
    if gateway is None:
        return
    try:
        ipr.neigh("del", dst=str(gateway), ifindex=ifindex)
    except NetlinkError as exc:
        if exc.code not in (errno.ENOENT, errno.ESRCH):
            raise
