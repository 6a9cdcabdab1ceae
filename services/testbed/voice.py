"""A voice-like UDP stream both ways between the CN and the MNN, and what it lost.

Each end runs one peer (`python -m services.testbed.voice peer ...` under `ip netns exec`):
it sends `rate` datagrams a second of `size` bytes to the other end (a 4-byte sequence
number, then padding; 50/s of 160 bytes is G.711 at 20 ms), from and to the same UDP port,
and records the sequence number and monotonic arrival time of every datagram it receives.
On SIGTERM it stops sending, keeps receiving for `drain_s` (datagrams still under way), then
writes its record as JSON. `summary` pairs one end's sent count with the other end's record:

- lost: sequence numbers from the first one received up to the last one sent that never
  arrived (the first datagrams may leave before the far end listens: they do not count);
- duplicates: arrivals of a sequence number already seen (a `duplicate` policy's copies);
- longest gap: the longest time between two new sequence numbers arriving, from the first
  arrival to the last (20 ms when nothing is lost; an outage shows as its length).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

DEFAULT_PORT = 5004
DEFAULT_RATE = 50
DEFAULT_SIZE = 160
DRAIN_S = 1.0
_HEADER = struct.Struct("!I")


def _sender(
    sock: socket.socket,
    to: tuple[str, int],
    pace: tuple[int, int],
    stop: threading.Event,
    sent: list[int],
) -> None:
    rate, size = pace
    interval = 1.0 / rate
    padding = b"\x00" * max(0, size - _HEADER.size)
    due = time.monotonic()
    seq = 0
    while not stop.is_set():
        # no route (a link down): the datagram is lost, as on a real link
        with contextlib.suppress(OSError):
            sock.sendto(_HEADER.pack(seq) + padding, to)
        seq += 1
        sent[0] = seq
        due += interval
        stop.wait(max(0.0, due - time.monotonic()))


class _Stopping:
    """SIGTERM arrived: the receive loop ends at its next turn, then drains.

    The handler only sets a flag. Raising from it could land between `recv` returning a
    datagram and its arrival being recorded, and lose that one datagram: the last datagram of
    a stream then counted as lost although it arrived."""

    def __init__(self) -> None:
        self.asked = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.asked = True


#: How long one receive waits before the loop looks at the stop flag again.
_TURN_S = 0.05


def peer(
    remote: str,
    port: int,
    out: Path,
    *,
    rate: int = DEFAULT_RATE,
    size: int = DEFAULT_SIZE,
    drain_s: float = DRAIN_S,
) -> int:
    """Send to `remote`:`port` and receive on [::]:`port` until SIGTERM; write the record."""
    stopping = _Stopping()
    signal.signal(signal.SIGTERM, stopping)
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.bind(("::", port))
    started = time.monotonic()
    stop = threading.Event()
    sent = [0]
    thread = threading.Thread(
        target=_sender, args=(sock, (remote, port), (rate, size), stop, sent), daemon=True
    )
    arrivals: list[tuple[int, float]] = []
    thread.start()
    sock.settimeout(_TURN_S)
    while not stopping.asked:
        _receive(sock, arrivals)
    stop.set()
    stopped = time.monotonic()
    deadline = stopped + drain_s
    while time.monotonic() < deadline:
        _receive(sock, arrivals)
    thread.join(1.0)
    record = {
        "started": started,
        "stopped": stopped,
        "rate": rate,
        "size": size,
        "sent": sent[0],
        "arrivals": arrivals,
    }
    out.write_text(json.dumps(record), encoding="utf-8")
    return 0


def _receive(sock: socket.socket, arrivals: list[tuple[int, float]]) -> None:
    """Wait one turn for a datagram and record its sequence number and arrival time."""
    try:
        data = sock.recv(2048)
    except OSError:  # the turn's time-out, or an ICMP error of our own sending
        return
    if len(data) >= _HEADER.size:
        arrivals.append((_HEADER.unpack_from(data)[0], time.monotonic()))


def direction(sender: dict[str, Any], receiver: dict[str, Any]) -> dict[str, Any]:
    """What one direction lost, duplicated and how long it went silent at most."""
    arrivals = [(int(seq), float(at)) for seq, at in receiver.get("arrivals", [])]
    sent = int(sender.get("sent", 0))
    if not arrivals:
        return {
            "sent": sent,
            "received": 0,
            "lost": sent,
            "duplicates": 0,
            "longest_gap_s": None,
            "missing_s": [],
        }
    first = min(seq for seq, _ in arrivals)
    seen: set[int] = set()
    duplicates = 0
    new_times: list[float] = []
    for seq, at in arrivals:
        if seq in seen:
            duplicates += 1
            continue
        seen.add(seq)
        new_times.append(at)
    expected = max(0, sent - first)
    received = len([s for s in seen if s < sent])
    gaps = [b - a for a, b in itertools.pairwise(new_times)]
    rate = float(sender.get("rate") or 0)
    return {
        "sent": expected,
        "received": received,
        "lost": max(0, expected - received),
        "duplicates": duplicates,
        "longest_gap_s": round(max(gaps), 4) if gaps else None,
        "missing_s": _missing(first, sent, seen, rate),
    }


#: Lost datagrams whose send time `direction` names, at most.
MISSING_SHOWN = 10


def _missing(first: int, sent: int, seen: set[int], rate: float) -> list[float]:
    """When the first lost datagrams were sent, in seconds after the stream's first one (its
    sequence over the rate): so a loss can be put beside the scenario's steps."""
    if rate <= 0:
        return []
    lost = (seq for seq in range(first, sent) if seq not in seen)
    return [round(seq / rate, 3) for seq in itertools.islice(lost, MISSING_SHOWN)]


def summary(cn: dict[str, Any], mnn: dict[str, Any]) -> dict[str, Any]:
    """Both directions (downlink CN -> MNN, uplink MNN -> CN) and their totals."""
    down = direction(cn, mnn)
    up = direction(mnn, cn)
    gaps = [g for g in (down["longest_gap_s"], up["longest_gap_s"]) if g is not None]
    return {
        "downlink": down,
        "uplink": up,
        "lost": down["lost"] + up["lost"],
        "duplicates": down["duplicates"] + up["duplicates"],
        "longest_gap_s": max(gaps) if gaps else None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m services.testbed.voice peer --remote ADDR --out FILE`."""
    parser = argparse.ArgumentParser(prog="services.testbed.voice")
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("peer", help="send and receive the voice stream until SIGTERM")
    one.add_argument("--remote", required=True)
    one.add_argument("--port", type=int, default=DEFAULT_PORT)
    one.add_argument("--rate", type=int, default=DEFAULT_RATE)
    one.add_argument("--size", type=int, default=DEFAULT_SIZE)
    one.add_argument("--out", type=Path, required=True)
    one.add_argument(
        "--drain-s",
        type=float,
        default=DRAIN_S,
        help="after SIGTERM, keep receiving this long (datagrams under way); default %(default)s",
    )
    args = parser.parse_args(argv)
    return peer(
        args.remote, args.port, args.out, rate=args.rate, size=args.size, drain_s=args.drain_s
    )


if __name__ == "__main__":
    sys.exit(main())
