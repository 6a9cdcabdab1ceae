"""Bit rates from two counter readings, and the cases where there is no honest rate."""

from __future__ import annotations

import dataclasses

import pytest

from services.monitor.counters import Counters, PacketRates, Rates, packet_rates, rates

BEFORE = Counters(rx_bytes=1_000, tx_bytes=5_000, rx_packets=10, tx_packets=20, at=100.0)


def later(**changes: float) -> Counters:
    return dataclasses.replace(BEFORE, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        (later(at=102.0), Rates(rx_bps=0.0, tx_bps=0.0)),
        (later(rx_bytes=2_000, tx_bytes=6_000, at=102.0), Rates(rx_bps=4_000.0, tx_bps=4_000.0)),
        (later(tx_bytes=5_000 + 125_000, tx_packets=120, at=100.5), Rates(0.0, 2_000_000.0)),
    ],
)
def test_rates_are_bits_per_second(current: Counters, expected: Rates) -> None:
    assert rates(BEFORE, current) == expected


@pytest.mark.parametrize("at", [100.0, 99.0])
def test_no_rate_without_time_passing(at: float) -> None:
    assert rates(BEFORE, later(rx_bytes=9_999, at=at)) is None


@pytest.mark.parametrize("field", ["rx_bytes", "tx_bytes", "rx_packets", "tx_packets"])
def test_no_rate_when_a_counter_went_back(field: str) -> None:
    """A re-created device starts from zero: that is no negative (or huge) rate."""
    assert rates(BEFORE, later(**{field: 0, "at": 110.0})) is None


def test_counters_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        BEFORE.at = 1.0  # type: ignore[misc]


def test_packet_rates_are_packets_per_second() -> None:
    measured = packet_rates(BEFORE, later(rx_packets=10 + 300, tx_packets=20 + 50, at=102.0))
    assert measured == PacketRates(rx_pps=150.0, tx_pps=25.0)


@pytest.mark.parametrize("field", ["rx_bytes", "rx_packets", "tx_packets"])
def test_no_packet_rate_when_a_counter_went_back_or_no_time_passed(field: str) -> None:
    assert packet_rates(BEFORE, later(**{field: 0, "at": 110.0})) is None
    assert packet_rates(BEFORE, later(rx_packets=99, at=100.0)) is None
