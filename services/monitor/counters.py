"""Interface byte and packet counters, and the bit and packet rates two readings of them imply.

The kernel's counters only grow while the device lives; a device that is deleted and created
again under the same name starts from zero. Rates over such a gap would be nonsense (negative or
huge), so `rates` declines to compute them and the caller simply waits for the next pair.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Counters:
    """The device's cumulative counters, read at monotonic time `at` (seconds)."""

    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int
    at: float


@dataclass(frozen=True, slots=True)
class Rates:
    """Average bit rates between two readings, in bits per second."""

    rx_bps: float
    tx_bps: float


def rates(previous: Counters, current: Counters) -> Rates | None:
    """Bit rates from `previous` to `current`; None if no time passed or a counter went back."""
    interval = current.at - previous.at
    if interval <= 0 or _went_back(previous, current):
        return None
    return Rates(
        rx_bps=(current.rx_bytes - previous.rx_bytes) * 8 / interval,
        tx_bps=(current.tx_bytes - previous.tx_bytes) * 8 / interval,
    )


@dataclass(frozen=True, slots=True)
class PacketRates:
    """Average packet rates between two readings, in packets per second (the console's
    per-link chart draws them: a flow moving between links shows as packets, whatever their
    size)."""

    rx_pps: float
    tx_pps: float


def packet_rates(previous: Counters, current: Counters) -> PacketRates | None:
    """Packet rates from `previous` to `current`; None as for `rates`."""
    interval = current.at - previous.at
    if interval <= 0 or _went_back(previous, current):
        return None
    return PacketRates(
        rx_pps=(current.rx_packets - previous.rx_packets) / interval,
        tx_pps=(current.tx_packets - previous.tx_packets) / interval,
    )


def _went_back(previous: Counters, current: Counters) -> bool:
    return (
        current.rx_bytes < previous.rx_bytes
        or current.tx_bytes < previous.tx_bytes
        or current.rx_packets < previous.rx_packets
        or current.tx_packets < previous.tx_packets
    )
