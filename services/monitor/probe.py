"""Active probes of the link monitor: one non-blocking socket per monitored link.

The monitor's single event-loop thread polls every prober's `fileno()` beside its stop pipe,
calls `send(seq)` on its schedule and `drain()` when a socket is readable, and feeds what it
sees (timed by itself) to that link's `ProbeWindow`. There is no thread per link: the CPU
target is 0.5% of a core per link at 1 Hz.

Two kinds of probe, the address family following the target address:

- ICMP echo over a raw socket. The peer's kernel answers, so nothing needs to run there. A
  kernel filter (ICMP6_FILTER / ICMP_FILTER) passes only echo replies to the socket. The
  kernel computes the ICMPv6 checksum; the ICMPv4 one is computed here.
- UDP to the project's responder (`services.monitor.responder`), which echoes the datagram,
  optionally after a delay, so that a test bed without netem can still emulate a slow link.

Matching. A raw socket sees every echo reply of its namespace (other probers, `ping`), and a
reply may be late, duplicated or forged. A reply is ours only if it comes from the target
address, carries our `ident` and our random per-prober token, and its sequence numbers agree.
The token also keeps a re-opened prober from taking the replies meant for its predecessor.

Sequence numbers. The caller's `seq` is 32-bit (0 .. 2**32 - 1) for both kinds. The UDP
datagram carries all 32 bits. The ICMP echo header has only 16 bits: it carries
`seq % 2**16` (wrapping every 65536 probes, 18 hours at 1 Hz), and the payload carries the
full 32-bit value, so `drain()` returns exactly the `seq` that `send()` was given.

Errors. Opening a prober that cannot work (unknown interface, source address not configured,
no privilege for raw sockets) raises `KernelError`. Once open, network errors never raise:
`send()` returns False and `drain()` returns what it could read; the caller counts the
unanswered probe as lost. A datagram the parser fails on (a parser bug: malformed replies
are simply not ours) is ignored and handed to `on_undecodable`, never raised. A prober
bound to an interface survives the interface being deleted and created again under the same
name: after a failed send it binds to the name again.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import secrets
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Protocol, Self

from services.contracts.errors import ConfigError, KernelError, Problem

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv6Address | ipaddress.IPv4Address

#: The UDP port the responder listens on unless configured otherwise.
DEFAULT_PROBE_PORT = 50007
#: Sequence numbers are unsigned 32-bit.
SEQ_LIMIT = 2**32
#: The ICMP identifier field is 16 bits; the UDP probe's is 32.
ICMP_IDENT_LIMIT = 2**16
UDP_IDENT_LIMIT = 2**32
#: Largest UDP probe datagram accepted: fits the IPv6 minimum MTU with IPv6 and UDP headers.
MAX_UDP_PROBE_BYTES = 1232
TOKEN_BYTES = 8

IFNAMSIZ = 16
ICMP6_ECHO_REQUEST = 128
ICMP6_ECHO_REPLY = 129
ICMP_ECHO_REQUEST = 8
ICMP_ECHO_REPLY = 0
_ICMP6_FILTER = 1  # <netinet/icmp6.h>, level IPPROTO_ICMPV6
_ICMP_FILTER = 1  # <linux/icmp.h>, level SOL_RAW
_SOL_RAW = 255
_DRAIN_LIMIT = 64  # datagrams per drain(); more stay readable for the next poll round
_RECV_BYTES = 2048

_ICMP_HEADER = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence (16 bit)
_ICMP_PAYLOAD = struct.Struct(f"!{TOKEN_BYTES}sI")  # token, sequence (32 bit)
_UDP_PROBE = struct.Struct(f"!4sBBHII{TOKEN_BYTES}s")
UDP_PROBE_MAGIC = b"MNPB"
UDP_PROBE_VERSION = 1
#: Size of the UDP probe this module sends (the header; the responder also echoes padding).
UDP_PROBE_BYTES = _UDP_PROBE.size


_IP_HEADER_BYTES = {6: 40, 4: 20}
_TRANSPORT_BYTES = {"icmp": 8 + _ICMP_PAYLOAD.size, "udp": 8 + UDP_PROBE_BYTES}


def probe_bytes_per_hour(kind: str, version: int, interval_s: float) -> float:
    """The probes' own traffic on the link in an hour: one request and one answer every
    `interval_s`, counted from the IP header up (a link layer adds its own framing)."""
    packet = _IP_HEADER_BYTES[version] + _TRANSPORT_BYTES[kind]
    return 2 * packet * 3600 / interval_s


class ProbeKind(StrEnum):
    """How a link is probed."""

    ICMP = "icmp"
    UDP = "udp"


class UdpProbeType(IntEnum):
    """A request goes to the responder, a reply comes back; nobody answers a reply."""

    REQUEST = 1
    REPLY = 2


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    """Where one link's probes go, and through which interface and source they must leave.

    `port` is used by UDP probes only. `interface` pins the probe to one link
    (SO_BINDTODEVICE), so that a target reachable over several links measures this one.
    A link-local target needs `interface` (it names the link the address is on).
    """

    kind: ProbeKind
    address: IPAddress
    port: int = DEFAULT_PROBE_PORT
    interface: str | None = None
    source: IPAddress | None = None

    def __post_init__(self) -> None:
        problems = _target_problems(self)
        if problems:
            raise ConfigError(problems)


def _target_problems(target: ProbeTarget) -> list[Problem]:
    problems = []
    if not 0 < target.port < 2**16:
        problems.append(Problem(f"port must be 1..65535, got {target.port}", field="port"))
    name = target.interface
    if name is not None and not (0 < len(name) < IFNAMSIZ and "/" not in name):
        problems.append(Problem(f"not an interface name: {name!r}", field="interface"))
    source = target.source
    if source is not None and source.version != target.address.version:
        reason = f"source {source} and address {target.address} are of different families"
        problems.append(Problem(reason, field="source"))
    if target.address.is_link_local and name is None:
        reason = f"link-local target {target.address} needs an interface"
        problems.append(Problem(reason, field="interface"))
    if target.address.is_multicast or target.address.is_unspecified:
        problems.append(Problem(f"not a unicast target: {target.address}", field="address"))
    return problems


@dataclass(frozen=True, slots=True)
class UdpProbe:
    """One decoded UDP probe datagram (request or reply)."""

    type: UdpProbeType
    ident: int
    seq: int
    token: bytes


def encode_udp_probe(probe: UdpProbe) -> bytes:
    """The datagram for `probe` (header only, `UDP_PROBE_BYTES` long)."""
    return _UDP_PROBE.pack(
        UDP_PROBE_MAGIC, UDP_PROBE_VERSION, probe.type, 0, probe.ident, probe.seq, probe.token
    )


def decode_udp_probe(datagram: bytes) -> UdpProbe | None:
    """The probe in `datagram`, or None for anything that is not a well-formed probe.

    Padding after the header is allowed up to `MAX_UDP_PROBE_BYTES` in all; the reserved
    field must be zero so that a later version can use it.
    """
    if not UDP_PROBE_BYTES <= len(datagram) <= MAX_UDP_PROBE_BYTES:
        return None
    magic, version, kind, reserved, ident, seq, token = _UDP_PROBE.unpack_from(datagram)
    if magic != UDP_PROBE_MAGIC or version != UDP_PROBE_VERSION or reserved != 0:
        return None
    if kind not in tuple(UdpProbeType):
        return None
    return UdpProbe(UdpProbeType(kind), ident, seq, token)


def icmp_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def encode_echo_request(version: int, ident: int, seq: int, token: bytes) -> bytes:
    """An ICMP (version 4) or ICMPv6 (version 6) echo request for `seq` (see module doc)."""
    payload = _ICMP_PAYLOAD.pack(token, seq)
    if version == 6:  # the kernel fills in the checksum of ICMPv6 raw sockets
        return _ICMP_HEADER.pack(ICMP6_ECHO_REQUEST, 0, 0, ident, seq & 0xFFFF) + payload
    unsummed = _ICMP_HEADER.pack(ICMP_ECHO_REQUEST, 0, 0, ident, seq & 0xFFFF) + payload
    checksum = icmp_checksum(unsummed)
    return _ICMP_HEADER.pack(ICMP_ECHO_REQUEST, 0, checksum, ident, seq & 0xFFFF) + payload


def parse_echo_reply(version: int, packet: bytes, ident: int, token: bytes) -> int | None:
    """The 32-bit seq of an echo reply to one of our requests, or None if it is not one.

    An IPv4 raw socket delivers the IP header too, and before the kernel has checked the
    ICMP checksum, so both are handled here; an ICMPv6 raw socket delivers the ICMPv6 message
    with its checksum already verified.
    """
    if version == 4:
        if not packet or packet[0] >> 4 != 4:
            return None
        packet = packet[(packet[0] & 0x0F) * 4 :]
        if icmp_checksum(packet) != 0:
            return None
    if len(packet) < _ICMP_HEADER.size + _ICMP_PAYLOAD.size:
        return None
    kind, code, _, got_ident, seq16 = _ICMP_HEADER.unpack_from(packet)
    got_token, seq = _ICMP_PAYLOAD.unpack_from(packet, _ICMP_HEADER.size)
    reply = ICMP6_ECHO_REPLY if version == 6 else ICMP_ECHO_REPLY
    if (kind, code, got_ident, got_token) != (reply, 0, ident, token) or seq16 != seq & 0xFFFF:
        return None
    return int(seq)


class Prober(Protocol):
    """A probe socket for one link, driven by the monitor's poll loop."""

    @property
    def target(self) -> ProbeTarget:
        """Where the probes go."""
        ...

    @property
    def ignored(self) -> int:
        """Datagrams read that were not answers to this prober (foreign, malformed, forged)."""
        ...

    def fileno(self) -> int:
        """The socket: poll it for POLLIN, then call `drain()`."""
        ...

    def send(self, seq: int) -> bool:
        """Send probe `seq` without blocking; False (logged at debug) if it could not leave."""
        ...

    def drain(self) -> list[int]:
        """Read the pending datagrams without blocking; return the seqs of our answered probes."""
        ...

    def close(self) -> None:
        """Close the socket (a second call does nothing)."""
        ...


#: (the datagram, what the parser raised on it)
OnUndecodable = Callable[[bytes, Exception], None]


class _SocketProber:
    """What both kinds share: sending, draining, re-binding, closing."""

    def __init__(
        self,
        target: ProbeTarget,
        ident: int,
        sock: socket.socket,
        on_undecodable: OnUndecodable | None = None,
    ) -> None:
        self._on_undecodable = on_undecodable
        self._target = target
        self._ident = ident
        self._sock = sock
        self._token = secrets.token_bytes(TOKEN_BYTES)
        self._version = target.address.version
        self._peer = ipaddress.ip_address(str(target.address).partition("%")[0])
        self._ignored = 0
        self._closed = False

    @property
    def target(self) -> ProbeTarget:
        """Where the probes go."""
        return self._target

    @property
    def ignored(self) -> int:
        """Datagrams read that were not answers to this prober (foreign, malformed, forged)."""
        return self._ignored

    def fileno(self) -> int:
        """The socket: poll it for POLLIN, then call `drain()`."""
        return self._sock.fileno()

    def send(self, seq: int) -> bool:
        """Send probe `seq` without blocking; False (logged at debug) if it could not leave.

        A `seq` outside 0 .. 2**32 - 1, or a send after `close()`, is a caller bug and raises
        ValueError.
        """
        if self._closed:
            raise ValueError("send on a closed prober")
        if not 0 <= seq < SEQ_LIMIT:
            raise ValueError(f"seq must be 0..{SEQ_LIMIT - 1}, got {seq}")
        try:
            self._sock.sendto(self._request(seq), self._sockaddr())
        except OSError as exc:
            log.debug("probe %d to %s not sent: %s", seq, self._describe(), exc)
            self._rebind_device()
            return False
        return True

    def drain(self) -> list[int]:
        """Read the pending datagrams without blocking; return the seqs of our answered probes.

        At most a bounded number of datagrams is read per call, so a flood cannot hold the
        event loop; the rest keeps the socket readable for the next poll round.
        """
        if self._closed:
            return []
        seqs: list[int] = []
        for _ in range(_DRAIN_LIMIT):
            try:
                data, sender = self._sock.recvfrom(_RECV_BYTES)
            except BlockingIOError:
                break
            except OSError as exc:
                log.debug("probe socket to %s: %s", self._describe(), exc)
                break
            try:
                seq = self._answer(data) if self._from_target(sender) else None
            except Exception as exc:
                seq = None
                self._undecodable(data, exc)
            if seq is None:
                self._ignored += 1
            else:
                seqs.append(seq)
        return seqs

    def _undecodable(self, data: bytes, error: Exception) -> None:
        if self._on_undecodable is not None:
            self._on_undecodable(data, error)
        else:
            log.error("probe socket to %s: parser failed: %r", self._describe(), error)

    def close(self) -> None:
        """Close the socket (a second call does nothing)."""
        if not self._closed:
            self._closed = True
            self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, seq: int) -> bytes:
        raise NotImplementedError

    def _answer(self, data: bytes) -> int | None:
        raise NotImplementedError

    def _port(self) -> int:
        return 0

    def _sockaddr(self) -> tuple[str, int] | tuple[str, int, int, int]:
        # A link-local target needs no scope id: SO_BINDTODEVICE names the link.
        if self._version == 6:
            return (str(self._peer), self._port(), 0, 0)
        return (str(self._peer), self._port())

    def _from_target(self, sender: tuple[object, ...]) -> bool:
        host = str(sender[0]).partition("%")[0]
        try:
            return ipaddress.ip_address(host) == self._peer
        except ValueError:
            return False

    def _rebind_device(self) -> None:
        """Bind to the interface name again, in case it was deleted and created anew.

        SO_BINDTODEVICE holds an ifindex; a device re-created under the same name gets a new
        one, and the socket would stay bound to the dead index forever. While the name does
        not exist this fails (ENODEV) and the next failed send tries again.
        """
        if self._target.interface is None:
            return
        try:
            _bind_device(self._sock, self._target.interface)
        except OSError as exc:
            log.debug("probe socket: interface %s: %s", self._target.interface, exc)

    def _describe(self) -> str:
        via = f" via {self._target.interface}" if self._target.interface else ""
        return f"{self._target.kind} {self._target.address}{via}"


class IcmpProber(_SocketProber):
    """ICMP or ICMPv6 echo over a raw socket; the peer's kernel answers."""

    def _request(self, seq: int) -> bytes:
        return encode_echo_request(self._version, self._ident, seq, self._token)

    def _answer(self, data: bytes) -> int | None:
        return parse_echo_reply(self._version, data, self._ident, self._token)


class UdpProber(_SocketProber):
    """A UDP probe datagram to the project's responder, which echoes it."""

    def _request(self, seq: int) -> bytes:
        return encode_udp_probe(UdpProbe(UdpProbeType.REQUEST, self._ident, seq, self._token))

    def _answer(self, data: bytes) -> int | None:
        probe = decode_udp_probe(data)
        if probe is None or probe.type != UdpProbeType.REPLY:
            return None
        if (probe.ident, probe.token) != (self._ident, self._token):
            return None
        return probe.seq

    def _port(self) -> int:
        return self._target.port

    def _from_target(self, sender: tuple[object, ...]) -> bool:
        return super()._from_target(sender) and sender[1] == self._target.port


def open_prober(
    target: ProbeTarget, *, ident: int, on_undecodable: OnUndecodable | None = None
) -> Prober:
    """Open the probe socket for `target` in the current network namespace.

    `ident` goes into every probe (ICMP: 0..65535, UDP: 0..2**32 - 1); give each monitored
    link its own. `on_undecodable` gets a datagram the parser failed on. Raises `KernelError`
    naming the interface or address when the socket cannot be opened or bound, and ValueError
    for an `ident` out of range.
    """
    limit = ICMP_IDENT_LIMIT if target.kind == ProbeKind.ICMP else UDP_IDENT_LIMIT
    if not 0 <= ident < limit:
        raise ValueError(f"{target.kind} ident must be 0..{limit - 1}, got {ident}")
    sock = _open_socket(target)
    if target.kind == ProbeKind.ICMP:
        return IcmpProber(target, ident, sock, on_undecodable)
    return UdpProber(target, ident, sock, on_undecodable)


def _open_socket(target: ProbeTarget) -> socket.socket:
    family = socket.AF_INET6 if target.address.version == 6 else socket.AF_INET
    try:
        sock = _new_socket(target.kind, family)
    except OSError as exc:
        raise _kernel_error(f"open {target.kind} probe socket for {target.address}", exc) from exc
    try:
        sock.setblocking(False)
        _configure(sock, target)
    except BaseException:
        sock.close()
        raise
    return sock


def _new_socket(kind: ProbeKind, family: socket.AddressFamily) -> socket.socket:
    if kind == ProbeKind.UDP:
        return socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        sock = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        sock.setsockopt(socket.IPPROTO_ICMPV6, _ICMP6_FILTER, _icmp6_filter_pass(ICMP6_ECHO_REPLY))
        return sock
    sock = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setsockopt(_SOL_RAW, _ICMP_FILTER, struct.pack("I", ~(1 << ICMP_ECHO_REPLY) & 0xFFFFFFFF))
    return sock


def _icmp6_filter_pass(icmp_type: int) -> bytes:
    """A `struct icmp6_filter` blocking every ICMPv6 type but one (a set bit blocks)."""
    words = [0xFFFFFFFF] * 8
    words[icmp_type >> 5] &= ~(1 << (icmp_type & 31)) & 0xFFFFFFFF
    return struct.pack("8I", *words)


def _configure(sock: socket.socket, target: ProbeTarget) -> None:
    if target.interface is not None:
        try:
            _bind_device(sock, target.interface)
        except OSError as exc:
            operation = f"bind probe socket to interface {target.interface!r}"
            raise _kernel_error(operation, exc) from exc
    if target.source is not None:
        try:
            sock.bind((str(target.source), 0))
        except OSError as exc:
            raise _kernel_error(f"bind probe socket to source {target.source}", exc) from exc


def _bind_device(sock: socket.socket, interface: str) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())


_HINTS = {
    errno.ENODEV: "no such interface in this network namespace",
    errno.EADDRNOTAVAIL: "address not configured here (or still tentative: DAD)",
    errno.EPERM: "raw sockets and SO_BINDTODEVICE need CAP_NET_RAW",
}


def _kernel_error(operation: str, exc: OSError) -> KernelError:
    code = exc.errno
    detail = _HINTS.get(code, exc.strerror or str(exc)) if code is not None else str(exc)
    return KernelError(operation, detail, code)
