"""The state of the watched access interfaces, kept current from rtnetlink events (no polling).

The monitor's single event-loop thread polls `LinkEvents.fileno()` beside its probe sockets and
calls `drain()` when it is readable; carrier loss arrives in a few milliseconds that way, where
polling would add up to a whole period. The step from a kernel message to interface state is
pure (`event_of` extracts a small typed event, `InterfaceTable.apply` folds it in), so it is
tested with constructed events; `LinkEvents` only moves messages between the kernel and it.

Which addresses count: IPv4 and IPv6 addresses of universe (global) or link scope, so IPv6
link-local addresses are in and host-scope ones (127.0.0.1, ::1) are out. Addresses that cannot
be used yet or at all are left out: tentative (duplicate address detection still running; the
kernel would not send from them) and dadfailed. Optimistic addresses (RFC 4429) are tentative
too but may be used at once, so they count. Deprecated ones still count: they keep working for
traffic already using them.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import select
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute, IPRSocket
from pyroute2.netlink import NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import (
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_GETLINK,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV6_IFADDR,
    RTMGRP_LINK,
)
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from services.contracts.errors import KernelError
from services.monitor.counters import Counters
from services.netlink_common import admin_and_carrier, dump

log = logging.getLogger(__name__)

GROUPS = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
IFA_F_OPTIMISTIC = 0x04
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40
_COUNTED_SCOPES = (RT_SCOPE_UNIVERSE, RT_SCOPE_LINK)
_ADDRESS_FAMILIES = (socket.AF_INET, socket.AF_INET6)
_DRAIN_LIMIT = 256  # datagrams per drain(), so a burst cannot starve the loop's other sockets


@dataclass(frozen=True, slots=True)
class InterfaceState:
    """One watched interface as the kernel last reported it.

    `carrier` is IFF_LOWER_UP, which the kernel also clears on admin down. `addresses` are
    sorted, compressed texts of the addresses that count (see the module docstring).
    """

    name: str
    exists: bool
    index: int | None
    admin_up: bool
    carrier: bool
    addresses: tuple[str, ...]

    @classmethod
    def missing(cls, name: str) -> InterfaceState:
        """A watched name no device holds (never created, deleted or renamed away)."""
        return cls(name, exists=False, index=None, admin_up=False, carrier=False, addresses=())


@dataclass(frozen=True, slots=True)
class LinkEvent:
    """An RTM_NEWLINK (or, `removed`, RTM_DELLINK) reduced to what the monitor uses."""

    index: int
    name: str | None
    flags: int
    removed: bool = False


@dataclass(frozen=True, slots=True)
class AddressEvent:
    """An RTM_NEWADDR (or, `removed`, RTM_DELADDR). `flags` are IFA_F_* (the 32-bit set)."""

    index: int
    address: str
    prefixlen: int
    scope: int
    flags: int
    removed: bool = False


Event = LinkEvent | AddressEvent


def address_counts(event: AddressEvent) -> bool:
    """Whether an address is one `InterfaceState.addresses` lists (see the module docstring)."""
    if event.scope not in _COUNTED_SCOPES or event.flags & IFA_F_DADFAILED:
        return False
    return not (event.flags & IFA_F_TENTATIVE and not event.flags & IFA_F_OPTIMISTIC)


def event_of(msg: Any) -> Event | None:
    """The typed event in a pyroute2 rtnetlink message; None for anything the monitor ignores.

    Link messages of another family than AF_UNSPEC are ignored: the bridge sends AF_BRIDGE
    RTM_NEWLINK/RTM_DELLINK about its ports, and such a DELLINK only means "left the bridge".
    """
    kind = msg["header"]["type"]
    if kind in (RTM_NEWLINK, RTM_DELLINK):
        if msg["family"] != socket.AF_UNSPEC:
            return None
        name = msg.get_attr("IFLA_IFNAME")
        return LinkEvent(
            index=int(msg["index"]),
            name=None if name is None else str(name),
            flags=int(msg["flags"]),
            removed=kind == RTM_DELLINK,
        )
    if kind in (RTM_NEWADDR, RTM_DELADDR) and msg["family"] in _ADDRESS_FAMILIES:
        # IFA_LOCAL is the own address; IFA_ADDRESS is the peer's on point-to-point links.
        text = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
        if text is None:
            return None
        flags = msg.get_attr("IFA_FLAGS")  # the header's 8-bit field cannot hold newer flags
        return AddressEvent(
            index=int(msg["index"]),
            address=ipaddress.ip_address(str(text)).compressed,
            prefixlen=int(msg["prefixlen"]),
            scope=int(msg["scope"]),
            flags=int(msg["flags"] if flags is None else flags),
            removed=kind == RTM_DELADDR,
        )
    return None


@dataclass(frozen=True, slots=True)
class _Device:
    name: str
    flags: int


class InterfaceTable:
    """Every device's name, flags and addresses as dumps and events told; no I/O.

    Devices are keyed by ifindex: address events name only the index, and a rename keeps it.
    Every device is tracked, not only the watched ones, so that a device renamed to a watched
    name arrives with its addresses. `apply` and `replace` return the new state of each watched
    interface whose state differs from the one last returned, so a caller sees only changes.
    """

    def __init__(self, names: Collection[str]) -> None:
        if isinstance(names, str):
            raise TypeError("names must be a collection of interface names, not one string")
        self._names = frozenset(names)
        self._devices: dict[int, _Device] = {}
        self._addresses: dict[int, set[tuple[str, int]]] = {}
        self._index_of: dict[str, int] = {}
        self._reported = {name: InterfaceState.missing(name) for name in sorted(self._names)}

    def current(self) -> dict[str, InterfaceState]:
        """Every watched name's state, missing ones with exists=False."""
        return dict(self._reported)

    def apply(self, event: Event) -> list[InterfaceState]:
        """Fold in one event; return the watched interfaces it changed (old name first)."""
        if isinstance(event, LinkEvent):
            return self._changes(self._fold_link(event))
        return self._changes(self._fold_address(event))

    def replace(self, dump: Iterable[Event]) -> list[InterfaceState]:
        """Start again from a full dump (links before addresses); return what differs."""
        self._devices.clear()
        self._addresses.clear()
        self._index_of.clear()
        for event in dump:
            if isinstance(event, LinkEvent):
                self._fold_link(event)
            else:
                self._fold_address(event)
        return self._changes(sorted(self._names))

    def _fold_link(self, event: LinkEvent) -> list[str]:
        touched = []
        old = self._devices.pop(event.index, None)
        if old is not None:
            touched.append(old.name)
            if self._index_of.get(old.name) == event.index:
                del self._index_of[old.name]
        if event.removed:
            self._addresses.pop(event.index, None)
            return touched
        name = event.name
        if name is None and old is not None:
            name = old.name  # a NEWLINK without IFLA_IFNAME keeps the known name
        if name is None:
            return touched
        self._devices[event.index] = _Device(name, event.flags)
        self._index_of[name] = event.index
        touched.append(name)
        return touched

    def _fold_address(self, event: AddressEvent) -> list[str]:
        key = (event.address, event.prefixlen)
        if event.removed or not address_counts(event):
            self._addresses.get(event.index, set()).discard(key)
        else:
            self._addresses.setdefault(event.index, set()).add(key)
        device = self._devices.get(event.index)
        return [] if device is None else [device.name]

    def _state_of(self, name: str) -> InterfaceState:
        index = self._index_of.get(name)
        device = None if index is None else self._devices.get(index)
        if index is None or device is None:
            return InterfaceState.missing(name)
        admin_up, carrier = admin_and_carrier(device.flags)
        addresses = tuple(sorted({address for address, _ in self._addresses.get(index, ())}))
        return InterfaceState(name, True, index, admin_up, carrier, addresses)

    def _changes(self, touched: Iterable[str]) -> list[InterfaceState]:
        changed = []
        for name in dict.fromkeys(touched):
            if name not in self._names:
                continue
            state = self._state_of(name)
            if state != self._reported[name]:
                self._reported[name] = state
                changed.append(state)
        return changed


def _get_link(sock: Any, name: str) -> Any | None:
    """One RTM_GETLINK for `name` on a request socket bound to no group (so only the answer
    arrives); the RTM_NEWLINK reply, or raise NetlinkError (ENODEV: no such device)."""
    request = ifinfmsg()
    request["family"] = socket.AF_UNSPEC
    request["attrs"] = [("IFLA_IFNAME", name)]
    sock.put(request, msg_type=RTM_GETLINK, msg_flags=NLM_F_REQUEST)
    found = None
    for reply in sock.get():
        error = reply["header"].get("error")
        if error is not None:
            raise error
        if reply["header"]["type"] == RTM_NEWLINK and found is None:
            found = reply
    return found


def _counters_of(msg: Any, at: float) -> Counters:
    stats = msg.get_attr("IFLA_STATS64")
    if stats is None:
        raise KernelError("read counters", "the link message has no IFLA_STATS64")
    return Counters(
        rx_bytes=int(stats["rx_bytes"]),
        tx_bytes=int(stats["tx_bytes"]),
        rx_packets=int(stats["rx_packets"]),
        tx_packets=int(stats["tx_packets"]),
        at=at,
    )


class LinkEvents:
    """Watched interfaces' state from rtnetlink events, for a caller's own poll loop.

    Construct it in the thread that will call its methods, inside the network namespace to
    watch: an IPRoute made in another thread never returned events here (docs/kernel.md), so every
    method but `close` refuses another thread. The constructor subscribes to link and address
    events first and dumps second, so no change falls between the two; events queued meanwhile
    are replayed by the first `drain()` and end in the same state. If the socket buffer overflows,
    events were lost: `drain()` then discards what is queued, dumps again and reports the
    differences (a flap that was over before the dump is then not seen). The event socket, and
    so `fileno()`, stays the same throughout, since the kernel keeps the socket usable after
    reporting ENOBUFS.
    """

    def __init__(
        self,
        names: Collection[str],
        *,
        rcvbuf: int = 1 << 20,
        clock: Callable[[], float] = time.monotonic,
        node: str = "-",
    ) -> None:
        self._table = InterfaceTable(names)
        self._clock = clock
        self._node = node
        self._owner = threading.get_ident()
        self._overflows = 0
        self._closed = False
        self._events: Any = IPRSocket(rcvbuf=rcvbuf)
        self._requests: Any = None
        self._queries: Any = None
        try:
            self._events.bind(groups=GROUPS)
            self._requests = IPRoute()
            # Counters are read every probe round: a bare request socket, not IPRoute, whose
            # `link("get")` keeps about 2 KB per call (pyroute2 0.9.7; the soak benchmark saw
            # the monitor grow by 1.3 MB a minute).
            self._queries = IPRSocket()
            self._queries.bind(groups=0)
            self._poller = select.poll()
            self._poller.register(self._events.fileno(), select.POLLIN)
            self._table.replace(self.dump())
        except BaseException:
            self.close()
            raise

    @property
    def overflows(self) -> int:
        """How often the event socket overflowed and the state was dumped again."""
        return self._overflows

    def fileno(self) -> int:
        """The event socket: poll it for POLLIN, then call `drain()`."""
        return int(self._events.fileno())

    def current(self) -> dict[str, InterfaceState]:
        """Every watched name's state, missing ones with exists=False."""
        return self._table.current()

    def drain(self) -> list[InterfaceState]:
        """Read the queued events without blocking; return each change of a watched interface.

        Changes come in event order, one entry per change, so one interface may appear more
        than once (down, then up again). At most 256 datagrams are read per call; the socket
        then stays readable and the next call goes on.
        """
        self._check_thread()
        changes: list[InterfaceState] = []
        for _ in range(_DRAIN_LIMIT):
            if not self._poller.poll(0):
                break
            try:
                messages = self._events.get()
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                changes.extend(self._resync())
                continue
            for msg in messages:
                event = event_of(msg)
                if event is not None:
                    changes.extend(self._table.apply(event))
        return changes

    def counters(self, name: str) -> Counters | None:
        """The interface's counters (IFLA_STATS64) in one request; None if no device has the name.

        Read over netlink rather than from /sys/class/net, which shows the sysfs of the
        namespace it was mounted in, not necessarily the one this process is in.
        """
        self._check_thread()
        try:
            reply = _get_link(self._queries, name)
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return None
            raise KernelError(f"read counters of {name}", str(exc), exc.code) from exc
        if reply is None:
            return None
        return _counters_of(reply, self._clock())

    def close(self) -> None:
        """Close both netlink sockets (a second call does nothing)."""
        if self._closed:
            return
        self._closed = True
        for sock in (self._events, self._requests, self._queries):
            if sock is not None:
                sock.close()

    def _check_thread(self) -> None:
        if threading.get_ident() != self._owner:
            raise RuntimeError(
                "LinkEvents used from another thread than the one that made it; pyroute2 "
                "sockets only work in the thread that created them"
            )

    def dump(self) -> list[Event]:
        messages = dump("links", self._requests.get_links) + dump(
            "addresses", self._requests.get_addr
        )
        return [event for event in map(event_of, messages) if event is not None]

    def _resync(self) -> list[InterfaceState]:
        self._overflows += 1
        log.warning(
            "node %s: netlink events for %s overflowed the socket buffer, dumping again",
            self._node,
            ", ".join(sorted(self._table.current())),
        )
        self._discard_queued()
        return self._table.replace(self.dump())

    def _discard_queued(self) -> None:
        """Drop events queued before the dump: the dump supersedes them."""
        for _ in range(_DRAIN_LIMIT * 4):
            if not self._poller.poll(0):
                return
            try:
                self._events.get()
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
