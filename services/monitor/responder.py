"""The UDP probe responder the project ships: it echoes probe datagrams, optionally late.

Why it exists: the link monitor's UDP probes need an echo at the far end, and this kernel has
no netem (docs/kernel.md), so a link's delay is emulated here: every answer leaves `delay` after
its request arrived.

Not a reflector. Only well-formed probe *requests* (`services.monitor.probe`) are answered,
never replies (two responders cannot be made to bounce a datagram between them), and the
answer is exactly as long as the request, which is bounded (`MAX_UDP_PROBE_BYTES`): no
amplification and no arbitrary payload. Answers leave from the address the request was sent
to (IPV6_PKTINFO / IP_PKTINFO): a multihomed peer answers from the address probed, and a
request sent to a multicast or broadcast address gets no answer (it is refused, or the kernel
refuses such a source address).

Concurrency without a thread per probe: one thread polls the socket with a timeout up to the
earliest due answer, and due answers wait in a heap. Probes are never serialised by the
delay; the heap is bounded and a request that finds it full is dropped (counted).
"""

from __future__ import annotations

import errno
import heapq
import ipaddress
import logging
import math
import select
import signal
import socket
import struct
import threading
import time
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import Self

from pydantic import BaseModel, ConfigDict, Field

from services.contracts.errors import KernelError
from services.monitor.probe import (
    DEFAULT_PROBE_PORT,
    IFNAMSIZ,
    MAX_UDP_PROBE_BYTES,
    IPAddress,
    UdpProbeType,
    decode_udp_probe,
)
from services.wakeup import Stopper

log = logging.getLogger(__name__)

#: The largest delay a responder accepts: more is not a link, it is an outage.
MAX_DELAY_MS = 10_000
#: Answers waiting at most; at 10 s delay this is 400 probes a second.
DEFAULT_MAX_PENDING = 4096
_RECEIVE_BATCH = 64  # datagrams read per wakeup before due answers are sent
_IP_PKTINFO = 8  # <linux/in.h>; the socket module lacks it
_IN6_PKTINFO = struct.Struct("16sI")  # address, ifindex
_IN_PKTINFO = struct.Struct("I4s4s")  # ifindex, local address, header destination
_ANCILLARY_BYTES = socket.CMSG_SPACE(_IN6_PKTINFO.size)

Ancillary = list[tuple[int, int, bytes]]


class ResponderSettings(BaseModel):
    """Where the responder listens and how late it answers (`multinet probe-responder`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    address: IPAddress = Field(
        default=ipaddress.IPv6Address("::"), description="listen address ('::' is dual-stack)"
    )
    port: int = Field(default=DEFAULT_PROBE_PORT, ge=0, le=65535, description="0: any free port")
    delay_ms: float = Field(default=0.0, ge=0, le=MAX_DELAY_MS, description="added to every RTT")
    interface: str | None = Field(
        default=None, min_length=1, max_length=IFNAMSIZ - 1, description="listen on this only"
    )


@dataclass
class ResponderStats:
    """What became of the datagrams received."""

    received: int = 0
    answered: int = 0
    refused: int = 0  # not a well-formed probe request, or not sent to a unicast address
    dropped: int = 0  # well-formed, but too many answers were already waiting
    failed: int = 0  # the answer could not be sent


@dataclass(frozen=True, slots=True)
class Answer:
    """A reply datagram, whom it goes to and the source it must leave from."""

    payload: bytes
    peer: tuple[object, ...]
    ancillary: Ancillary = field(default_factory=list)


class AnswerQueue:
    """Answers ordered by the time they are due; bounded. Time is an argument."""

    def __init__(self, limit: int = DEFAULT_MAX_PENDING) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self._limit = limit
        self._heap: list[tuple[float, int, Answer]] = []
        self._count = 0  # tie-break: equal due times leave in arrival order

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, due: float, answer: Answer) -> bool:
        """Queue `answer` for `due`; False (and not queued) when the queue is full."""
        if len(self._heap) >= self._limit:
            return False
        self._count += 1
        heapq.heappush(self._heap, (due, self._count, answer))
        return True

    def pop_due(self, now: float) -> list[Answer]:
        """Remove and return every answer due at or before `now`, earliest first."""
        due: list[Answer] = []
        while self._heap and self._heap[0][0] <= now:
            due.append(heapq.heappop(self._heap)[2])
        return due

    def timeout_ms(self, now: float) -> int | None:
        """How long poll may sleep: until the earliest answer is due, None when empty.

        Rounded up, so that poll never wakes before an answer is due.
        """
        if not self._heap:
            return None
        return max(0, math.ceil((self._heap[0][0] - now) * 1000))


def answer_for(datagram: bytes) -> bytes | None:
    """The reply to a probe request: the same bytes, marked as a reply. None for anything else."""
    probe = decode_udp_probe(datagram)
    if probe is None or probe.type != UdpProbeType.REQUEST:
        return None
    return datagram[:5] + bytes([UdpProbeType.REPLY]) + datagram[6:]


def reply_source(ancillary: Ancillary) -> Ancillary | None:
    """The ancillary data that makes the answer leave from the address probed.

    Returns [] when the request carried no packet info (the kernel then picks the source),
    and None when the request was sent to a multicast address, which is not answered.
    """
    for level, kind, data in ancillary:
        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
            return _reply_source_v6(data)
        if level == socket.IPPROTO_IP and kind == _IP_PKTINFO:
            return _reply_source_v4(data)
    return []


def _reply_source_v6(data: bytes) -> Ancillary | None:
    packed, ifindex = _IN6_PKTINFO.unpack_from(data)
    destination = ipaddress.IPv6Address(packed)
    mapped = destination.ipv4_mapped
    if destination.is_multicast or (mapped is not None and mapped.is_multicast):
        return None
    # The interface only matters for a link-local source; elsewhere routing chooses.
    keep = ifindex if destination.is_link_local else 0
    return [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, _IN6_PKTINFO.pack(packed, keep))]


def _reply_source_v4(data: bytes) -> Ancillary | None:
    _, _, packed = _IN_PKTINFO.unpack_from(data)
    if ipaddress.IPv4Address(packed).is_multicast:
        return None
    return [(socket.IPPROTO_IP, _IP_PKTINFO, _IN_PKTINFO.pack(0, packed, bytes(4)))]


class DelayResponder:
    """Echo probe requests on one UDP socket after `delay_s`, from one background thread.

    Open the socket in the network namespace it should serve: `start()` (or entering the
    context manager) binds in the calling thread. `run()` serves in the calling thread
    instead, until its `Stopper` is set.
    """

    def __init__(
        self,
        address: str = "::",
        port: int = DEFAULT_PROBE_PORT,
        *,
        delay_s: float = 0.0,
        interface: str | None = None,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        if not 0 <= delay_s <= MAX_DELAY_MS / 1000:
            raise ValueError(f"delay_s must be 0..{MAX_DELAY_MS / 1000}, got {delay_s}")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0..65535, got {port}")
        self._address = ipaddress.ip_address(address)
        self._requested_port = port
        self._delay = delay_s
        self._interface = interface
        self._queue = AnswerQueue(max_pending)
        self._stats = ResponderStats()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopper = Stopper()

    @classmethod
    def from_settings(cls, settings: ResponderSettings) -> DelayResponder:
        """A responder as `settings` describe it."""
        return cls(
            str(settings.address),
            settings.port,
            delay_s=settings.delay_ms / 1000,
            interface=settings.interface,
        )

    @property
    def port(self) -> int:
        """The port actually bound (differs from the one asked for when that was 0)."""
        if self._sock is None:
            raise RuntimeError("the responder is not bound")
        return int(self._sock.getsockname()[1])

    @property
    def delay_s(self) -> float:
        """The delay added to every answer from now on."""
        return self._delay

    @delay_s.setter
    def delay_s(self, value: float) -> None:
        """Change the delay while serving (a test's delay step); requests already waiting
        keep theirs."""
        if not 0 <= value <= MAX_DELAY_MS / 1000:
            raise ValueError(f"delay_s must be 0..{MAX_DELAY_MS / 1000}, got {value}")
        self._delay = value

    @property
    def stats(self) -> ResponderStats:
        """A copy of the counters."""
        return replace(self._stats)

    def open(self) -> None:
        """Bind the socket in the current network namespace (once). Raises KernelError."""
        if self._sock is None:
            self._sock = _open_socket(self._address, self._requested_port, self._interface)

    def start(self) -> None:
        """Bind if needed, then answer in a background thread (once)."""
        if self._thread is not None:
            return
        self.open()
        self._thread = threading.Thread(
            target=self.run, args=(self._stopper,), name="probe-responder", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the background thread, drop the answers still waiting, close the socket."""
        self._stopper.stop()
        if self._thread is not None:
            self._thread.join(10)
        self.close()
        self._stopper.close()

    def close(self) -> None:
        """Close the socket (after `run()` has returned)."""
        if self._sock is not None:
            self._sock.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run(self, stopper: Stopper) -> None:
        """Serve in the calling thread until `stopper` is set."""
        self.open()
        assert self._sock is not None
        poller = select.poll()
        poller.register(self._sock, select.POLLIN)
        poller.register(stopper.fileno(), select.POLLIN)
        log.info(
            "answering probes on [%s]:%d with %.1f ms delay",
            self._address,
            self.port,
            self._delay * 1000,
        )
        while not stopper.stopped:
            events = poller.poll(self._queue.timeout_ms(time.monotonic()))
            if any(fd == self._sock.fileno() for fd, _ in events):
                self._receive(self._sock)
            self._send_due(self._sock, time.monotonic())

    def _receive(self, sock: socket.socket) -> None:
        for _ in range(_RECEIVE_BATCH):
            try:
                data, ancillary, flags, peer = sock.recvmsg(
                    MAX_UDP_PROBE_BYTES + 1, _ANCILLARY_BYTES
                )
            except BlockingIOError:
                return
            except OSError as exc:
                log.debug("probe responder: receive: %s", exc)
                return
            self._stats.received += 1
            self._accept(data, ancillary, flags, peer, time.monotonic())

    def _accept(
        self, data: bytes, ancillary: Ancillary, flags: int, peer: tuple[object, ...], now: float
    ) -> None:
        payload = None if flags & socket.MSG_TRUNC else answer_for(data)
        source = reply_source(ancillary)
        if payload is None or source is None:
            self._stats.refused += 1
            return
        if not self._queue.push(now + self._delay, Answer(payload, peer, source)):
            self._stats.dropped += 1

    def _send_due(self, sock: socket.socket, now: float) -> None:
        for answer in self._queue.pop_due(now):
            try:
                sock.sendmsg([answer.payload], answer.ancillary, 0, answer.peer)
            except OSError as exc:
                log.debug("probe responder: answer to %s: %s", answer.peer, exc)
                self._stats.failed += 1
            else:
                self._stats.answered += 1


def serve(settings: ResponderSettings, stopper: Stopper) -> None:
    """Run a responder as `settings` describe it until `stopper` is set (the CLI's entry)."""
    responder = DelayResponder.from_settings(settings)
    try:
        responder.run(stopper)
    finally:
        responder.close()


def serve_forever(settings: ResponderSettings) -> int:
    """Serve until SIGTERM or SIGINT; the exit status (1 when the socket cannot be bound).

    For the command line (`multinet probe-responder`): call it from the main thread, in the
    network namespace to serve. The previous signal handlers are restored on return.
    """
    stopper = Stopper()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopper.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        serve(settings, stopper)
    except KernelError as exc:
        log.error("probe responder: %s", exc)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stopper.close()
    return 0


def _open_socket(address: IPAddress, port: int, interface: str | None) -> socket.socket:
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        _configure(sock, family, interface)
        sock.bind((str(address), port))
    except OSError as exc:
        sock.close()
        via = f" on {interface}" if interface else ""
        detail = exc.strerror or str(exc)
        if exc.errno == errno.ENODEV:
            detail = f"no interface {interface!r} in this network namespace"
        operation = f"bind probe responder to [{address}]:{port}{via}"
        raise KernelError(operation, detail, exc.errno) from exc
    sock.setblocking(False)
    return sock


def _configure(sock: socket.socket, family: socket.AddressFamily, interface: str | None) -> None:
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
    if interface is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
