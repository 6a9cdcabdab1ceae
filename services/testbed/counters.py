"""The MR's egress interfaces, counted over netlink inside its namespace.

What Figure 7 plots (packets per second on eth0 and eth1 over time) comes from a sampler every
100 ms; a second one every 10 ms times when a flow moved. A dedicated thread moves itself
(only itself: `setns` is per thread) into the MR's namespace, opens a raw NETLINK_ROUTE socket
there and asks for each watched device with one RTM_GETLINK request, reading the 64-bit
statistics (IFLA_STATS64) from the answer: about 30 us per device, where pyroute2 takes about
0.8 ms, so sampling costs next to nothing whatever the stream's rate. Samples sit on a fixed
grid of the monotonic clock.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from services import netns

log = logging.getLogger(__name__)

PERIOD_S = 0.1
FINE_PERIOD_S = 0.01


@dataclass(frozen=True)
class Counts:
    """One device's cumulative counters."""

    rx_packets: int
    tx_packets: int
    rx_bytes: int
    tx_bytes: int


@dataclass(frozen=True)
class Sample:
    """The counters of every watched device at one instant (monotonic time)."""

    at: float
    devices: dict[str, Counts]


_RTM_GETLINK = 18
_NLM_F_REQUEST = 1
_NLMSG_ERROR = 2
_IFLA_STATS64 = 23


def parse_stats64(data: bytes) -> Counts | None:
    """The counters in one RTM_NEWLINK answer (nlmsghdr, ifinfomsg, attributes), or None."""
    if len(data) < 32:
        return None
    length, kind = struct.unpack_from("=IH", data)
    if kind == _NLMSG_ERROR:
        return None
    offset = 32  # nlmsghdr (16) + ifinfomsg (16)
    while offset + 4 <= min(length, len(data)):
        size, attr = struct.unpack_from("=HH", data, offset)
        if size < 4:
            return None
        if attr == _IFLA_STATS64 and size >= 4 + 32:
            rx_p, tx_p, rx_b, tx_b = struct.unpack_from("=QQQQ", data, offset + 4)
            return Counts(int(rx_p), int(tx_p), int(rx_b), int(tx_b))
        offset += (size + 3) & ~3
    return None


def read_counts(sock: socket.socket, index: int, seq: int) -> Counts | None:
    """One device's counters by one RTM_GETLINK request on a raw netlink socket."""
    body = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, 0, 0)
    header = struct.pack("=IHHII", 16 + len(body), _RTM_GETLINK, _NLM_F_REQUEST, seq, 0)
    sock.send(header + body)
    return parse_stats64(sock.recv(65536))


class CounterSampler:
    """Samples the devices `names` of namespace `ns` every `period_s` in a named thread."""

    def __init__(self, ns: str, names: Sequence[str], period_s: float = PERIOD_S) -> None:
        self.ns = ns
        self.names = tuple(names)
        self.period_s = period_s
        self._samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"counters-{ns}", daemon=True)

    def start(self, timeout_s: float = 5.0) -> None:
        """Start sampling; return after the first sample (raise if none can be taken)."""
        self._thread.start()
        if not self._ready.wait(timeout_s) or self._error is not None:
            self.stop()
            raise RuntimeError(f"cannot sample counters in {self.ns}: {self._error!r}")

    def stop(self) -> None:
        """Stop sampling and wait for the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)

    def samples(self, since: float = 0.0) -> list[Sample]:
        """The samples taken at or after `since`, oldest first."""
        with self._lock:
            return [s for s in self._samples if s.at >= since]

    def latest(self) -> Sample | None:
        """The last sample."""
        with self._lock:
            return self._samples[-1] if self._samples else None

    def _run(self) -> None:
        try:
            netns.enter(self.ns)
            indexes = {name: socket.if_nametoindex(name) for name in self.names}
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        try:
            due, seq = time.monotonic(), 0
            while not self._stop.is_set():
                counts = {}
                for name, index in indexes.items():
                    seq += 1
                    found = read_counts(sock, index, seq)
                    if found is not None:
                        counts[name] = found
                with self._lock:
                    self._samples.append(Sample(time.monotonic(), counts))
                self._ready.set()
                due += self.period_s
                delay = due - time.monotonic()
                if delay < 0:  # fell behind (a loaded VM): keep the grid, skip missed slots
                    due += self.period_s * (int(-delay / self.period_s) + 1)
                    delay = due - time.monotonic()
                self._stop.wait(delay)
        except Exception as exc:
            self._error = exc
            log.exception("counter sampling in %s stopped", self.ns)
        finally:
            sock.close()
