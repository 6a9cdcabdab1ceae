"""The bus client's reconnect delay: exponential, jittered, reset only by a successful CONNACK."""

from __future__ import annotations

import random
from typing import Any

import pytest

from services import bus
from services.contracts.settings import BrokerSettings


@pytest.mark.parametrize(
    ("attempt", "draw", "expected"),
    [
        (0, 0.0, 0.5),
        (0, 0.999, 0.9995),
        (1, 0.0, 1.0),
        (2, 0.5, 3.0),
        (4, 1.0, 16.0),
        (5, 0.0, 15.0),  # capped: the step is 30 s, half of it fixed
        (60, 0.0, 15.0),
    ],
)
def test_delay_table(attempt: int, draw: float, expected: float) -> None:
    assert bus.reconnect_delay(attempt, draw) == pytest.approx(expected)


def test_clients_spread_out() -> None:
    delays = [bus.reconnect_delay(0, random.random()) for _ in range(50)]
    assert all(0.5 <= d < 1.0 for d in delays)
    assert len({round(d, 3) for d in delays}) > 40


def _delay(client: object) -> float:
    value = client._reconnect_min_delay  # type: ignore[attr-defined]
    assert value == client._reconnect_max_delay  # type: ignore[attr-defined]
    return float(value)


def test_paho_gets_each_next_delay_and_a_connack_resets_them() -> None:
    client = bus.make_client(BrokerSettings(), "backoff-test")
    assert isinstance(client, bus.BusClient)
    client.backoff.rng = random.Random(7)
    # paho's callbacks, as its network thread calls them (VERSION2 signatures).
    lost: Any = client.on_disconnect
    failed: Any = client.on_connect_fail
    waits = []
    lost(client, None, None, None, None)  # the connection is lost
    waits.append(_delay(client))
    for _ in range(6):
        failed(client, None)  # each attempt refused
        waits.append(_delay(client))
    steps = [1, 2, 4, 8, 16, 30, 30]
    for wait, step in zip(waits, steps, strict=True):
        assert step / 2 <= wait < step
    # A refused CONNACK also ends in on_disconnect: it must not reset the exponent.
    lost(client, None, None, None, None)
    assert _delay(client) >= 15
    client.backoff.connected(client)
    assert _delay(client) < 1
