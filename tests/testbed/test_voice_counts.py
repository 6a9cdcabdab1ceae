"""What the voice stream's counts say of one direction: losses, duplicates, and when the lost
datagrams were sent (so a loss can be put beside the scenario's steps)."""

from __future__ import annotations

from services.testbed.voice import MISSING_SHOWN, direction


def test_losses_are_counted_and_placed_in_time() -> None:
    sender = {"sent": 100, "rate": 50.0}
    arrivals = [[seq, 1000.0 + seq / 50] for seq in range(100) if seq not in (7, 60)]
    arrivals.append([3, 1000.5])  # a copy of datagram 3 (duplicated sending)
    result = direction(sender, {"arrivals": arrivals})
    assert result["sent"] == 100
    assert result["lost"] == 2
    assert result["duplicates"] == 1
    assert result["missing_s"] == [0.14, 1.2]


def test_only_the_first_losses_are_named() -> None:
    result = direction({"sent": 1000, "rate": 100.0}, {"arrivals": [[0, 1.0], [999, 2.0]]})
    assert result["lost"] == 998
    assert result["missing_s"] == [round(seq / 100, 3) for seq in range(1, 1 + MISSING_SHOWN)]


def test_nothing_received_loses_everything() -> None:
    result = direction({"sent": 30, "rate": 50.0}, {"arrivals": []})
    assert (result["lost"], result["missing_s"]) == (30, [])
