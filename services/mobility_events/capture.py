"""Receive Mobility Header packets in the current network namespace and decode them.

Two sockets, both opened by `start()` in the namespace current at that moment:

- A raw IPv6 socket for protocol 135 sees every Mobility Header *addressed to this node*: on a
  home agent the BUs, on a mobile router the BAs. The kernel has already checked the MH
  checksum. The destination comes from IPV6_PKTINFO, the source from the sender address.
  A node that only forwards signalling (an access router) sees nothing here: raw sockets get
  packets for local delivery only.
- With `outgoing=True`, an AF_PACKET socket with a kernel filter passes only *outgoing* IPv6
  packets whose next header is 135 (loopback excluded, as the raw socket already sees those):
  the home agent's own BAs, the router's own BUs. Raw sockets never see what the node sends,
  so without it one node sees only half of each exchange. It only parses MH directly after the
  IPv6 header, which is all this kernel can send (no HAO or type 2 routing header, docs/kernel.md).
  Outgoing packets reach only ETH_P_ALL taps, so the filter runs (in the kernel, a few
  instructions) on every packet the node sends or receives, and the kernel clones each
  outgoing packet once for its taps: switch it off where only one direction matters.
  The filter is packed by hand from a libpcap expression (`_FILTER_EXPRESSION`, a test checks
  that libpcap compiles it to these bytes) rather than compiled at run time: that would bring
  libpcap and a ctypes binding into the service for a program that never changes.

Malformed headers are counted (here, in `DECODE_STATS` and by `on_malformed`, which gets the
error with its reason) and dropped, never raised. A packet on which the decoder itself fails
(any other exception: a decoder bug, not a malformed header) is counted as `undecodable` and
handed to `on_undecodable` with the packet, and the capture goes on: one packet must not end
it. The callbacks run in the capture thread: keep them short (put the message on a queue).
An error raised by `on_message` or by the sockets ends the thread and goes to `on_error`.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv6Address

from services.mobility_header.codec import IPPROTO_MH, Message, decode
from services.mobility_header.errors import MobilityHeaderError
from services.wakeup import Stopper

log = logging.getLogger(__name__)

#: (receive time, packet source, packet destination, decoded message)
OnMessage = Callable[[float, IPv6Address, IPv6Address, Message], None]
#: (the Mobility Header's bytes, packet source, what the decoder raised)
OnUndecodable = Callable[[bytes, IPv6Address, Exception], None]

_ETH_P_ALL = 0x0003
_ETH_P_IPV6 = 0x86DD
_SO_ATTACH_FILTER = 26
_PACKET_OUTGOING = 4
_LOOPBACK_IFINDEX = 1
_SKF_AD_PROTOCOL = 0xFFFFF000 + 0
_SKF_AD_PKTTYPE = 0xFFFFF000 + 4  # SKF_AD_OFF (-0x1000) + SKF_AD_PKTTYPE, as unsigned
_SKF_AD_IFINDEX = 0xFFFFF000 + 8
_IPV6_HEADER = 40
_PKTINFO = struct.Struct("16sI")
_BUFSIZE = 65535
_DRAIN_LIMIT = 256

# Classic BPF on the network header (SOCK_DGRAM packet socket): accept outgoing, non-loopback
# IPv6 packets whose next header is 135. (code, jt, jf, k)
#
# Its source is readable: past the first two instructions it is exactly what libpcap compiles
# from _FILTER_EXPRESSION for a raw-IP handle (`tcpdump -y RAW -s 65535 -ddd EXPR`), which
# tests/mobility_events/test_capture_filter.py checks, so the bytes cannot drift from it.
# The first two test the packet's ethertype (SKF_AD_PROTOCOL), which libpcap cannot express on
# a raw-IP handle: there `ip6` tests only the version nibble, which another protocol can match.
_FILTER_EXPRESSION = "outbound and not ifindex 1 and ip6[6] == 135"
_FILTER = (
    (0x20, 0, 0, _SKF_AD_PROTOCOL),  # ld #proto              the ethertype
    (0x15, 0, 10, _ETH_P_IPV6),  # jeq #0x86dd ? next : drop
    # _FILTER_EXPRESSION, as libpcap compiles it:
    (0x28, 0, 0, _SKF_AD_PKTTYPE),  # ldh #pkttype           outbound
    (0x15, 0, 8, _PACKET_OUTGOING),  # jeq #outgoing ? next : drop
    (0x20, 0, 0, _SKF_AD_IFINDEX),  # ld #ifindex            not ifindex 1
    (0x15, 6, 0, _LOOPBACK_IFINDEX),  # jeq #1 ? drop : next
    (0x30, 0, 0, 0),  # ldb [0]                        ip6: the version nibble
    (0x54, 0, 0, 0xF0),  # and #0xf0
    (0x15, 0, 3, 0x60),  # jeq #0x60 ? next : drop
    (0x30, 0, 0, 6),  # ldb [6]                        ip6[6] == 135: the next header
    (0x15, 0, 1, IPPROTO_MH),  # jeq #135 ? accept : drop
    (0x06, 0, 0, 0xFFFF),  # ret #65535             accept
    (0x06, 0, 0, 0),  # ret #0                         drop
)


@dataclass
class CaptureStats:
    """Packets read and what became of them."""

    received: int = 0
    decoded: int = 0
    malformed: int = 0
    truncated: int = 0
    undecodable: int = 0


def _attach_filter(sock: socket.socket) -> None:
    program = b"".join(struct.pack("HBBI", *insn) for insn in _FILTER)
    buffer = ctypes.create_string_buffer(program)
    fprog = struct.pack("HL", len(_FILTER), ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)


def _open_raw() -> socket.socket:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, IPPROTO_MH)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _open_outgoing() -> socket.socket:
    # Outgoing packets reach ETH_P_ALL taps only (dev_queue_xmit_nit), never a socket bound to
    # one protocol: hence ETH_P_ALL, with the filter picking IPv6 in the kernel.
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(_ETH_P_ALL))
    try:
        _attach_filter(sock)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _source(address: object) -> IPv6Address:
    """The sender of a raw socket datagram; a link-local scope (`%eth0`) is dropped."""
    host = str(address[0] if isinstance(address, tuple) else address)
    return IPv6Address(host.split("%", 1)[0])


class MhCapture:
    """Reads Mobility Headers in a named daemon thread and hands each to `on_message`."""

    def __init__(
        self,
        on_message: OnMessage,
        *,
        outgoing: bool = False,
        on_error: Callable[[BaseException], None] | None = None,
        on_malformed: Callable[[MobilityHeaderError], None] | None = None,
        on_undecodable: OnUndecodable | None = None,
        name: str = "mh-capture",
        node: str = "-",
    ) -> None:
        self._on_message = on_message
        self._outgoing = outgoing
        self._on_error = on_error
        self._on_malformed = on_malformed
        self._on_undecodable = on_undecodable
        self._node = node
        self.stats = CaptureStats()
        self._raw: socket.socket | None = None
        self._packet: socket.socket | None = None
        self._stop = Stopper()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Open the sockets in the current namespace (errors raise here) and start reading."""
        self._raw = _open_raw()
        if self._outgoing:
            try:
                self._packet = _open_outgoing()
            except BaseException:
                self._raw.close()
                raise
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Wake the thread, wait for it to exit, close the sockets."""
        self._stop.stop()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("node %s: MH capture did not exit within %s s", self._node, timeout)
            return
        for sock in (self._raw, self._packet):
            if sock is not None:
                sock.close()
        self._stop.close()

    @property
    def alive(self) -> bool:
        """The thread runs; False after stop() or a fatal error."""
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._read_loop()
        except BaseException as exc:
            log.exception("node %s: MH capture failed", self._node)
            if self._on_error is not None:
                self._on_error(exc)

    def _read_loop(self) -> None:
        poller = select.poll()
        poller.register(self._stop.fileno(), select.POLLIN)
        readers: dict[int, Callable[[], bool]] = {}
        if self._raw is not None:
            poller.register(self._raw.fileno(), select.POLLIN)
            readers[self._raw.fileno()] = self._read_raw
        if self._packet is not None:
            poller.register(self._packet.fileno(), select.POLLIN)
            readers[self._packet.fileno()] = self._read_packet
        while not self._stop.stopped:
            for fd, _mask in poller.poll():
                read = readers.get(fd)
                if read is None:
                    continue
                for _ in range(_DRAIN_LIMIT):
                    if not read():
                        break

    def _read_raw(self) -> bool:
        assert self._raw is not None
        try:
            data, ancillary, flags, address = self._raw.recvmsg(
                _BUFSIZE, socket.CMSG_SPACE(_PKTINFO.size)
            )
        except BlockingIOError:
            return False
        except InterruptedError:
            return True
        now = time.time()
        self.stats.received += 1
        if flags & socket.MSG_TRUNC:
            self.stats.truncated += 1
            return True
        dst: IPv6Address | None = None
        for level, kind, value in ancillary:
            if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
                dst = IPv6Address(_PKTINFO.unpack_from(value.ljust(_PKTINFO.size, b"\0"))[0])
        if dst is None:  # cannot happen with IPV6_RECVPKTINFO set; never guess the address
            self.stats.truncated += 1
            return True
        self._deliver(now, _source(address), dst, data)
        return True

    def _read_packet(self) -> bool:
        assert self._packet is not None
        try:
            packet = self._packet.recv(_BUFSIZE)
        except BlockingIOError:
            return False
        except InterruptedError:
            return True
        except OSError as exc:
            if exc.errno == errno.ENETDOWN:  # the device went away under us: keep going
                return True
            raise
        now = time.time()
        self.stats.received += 1
        if len(packet) < _IPV6_HEADER or packet[0] >> 4 != 6 or packet[6] != IPPROTO_MH:
            self.stats.truncated += 1
            return True
        end = _IPV6_HEADER + int.from_bytes(packet[4:6], "big")
        if end > len(packet):
            self.stats.truncated += 1
            return True
        src = IPv6Address(packet[8:24])
        dst = IPv6Address(packet[24:40])
        self._deliver(now, src, dst, memoryview(packet)[_IPV6_HEADER:end])
        return True

    def _deliver(
        self, now: float, src: IPv6Address, dst: IPv6Address, data: bytes | memoryview
    ) -> None:
        try:
            message = decode(data)
        except MobilityHeaderError as exc:
            self.stats.malformed += 1
            log.debug("node %s: malformed MH from %s: %s", self._node, src, exc)
            if self._on_malformed is not None:
                self._on_malformed(exc)
            return
        except Exception as exc:
            self.stats.undecodable += 1
            if self._on_undecodable is not None:
                self._on_undecodable(bytes(data), src, exc)
            else:
                log.exception("node %s: the decoder failed on a packet from %s", self._node, src)
            return
        self.stats.decoded += 1
        self._on_message(now, src, dst, message)
