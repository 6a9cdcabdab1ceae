"""The up/down state machine: consecutive probe counts, carrier loss at once."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.monitor.state import LinkStateMachine, LinkStateSettings, Transition

# Inputs: "+" good probe, "-" failed probe, "C" carrier present, "c" carrier lost.


def feed(machine: LinkStateMachine, inputs: str) -> list[tuple[int, bool, str]]:
    """Run the inputs at now = 0, 1, 2, ...; return (now, up, reason) of each transition."""
    seen: list[tuple[int, bool, str]] = []
    for now, symbol in enumerate(inputs):
        transition: Transition | None
        if symbol in "+-":
            transition = machine.probe(symbol == "+", float(now))
        else:
            transition = machine.carrier_changed(symbol == "C", float(now))
        if transition is not None:
            assert transition.at == now
            assert transition.carrier == machine.carrier
            seen.append((now, transition.up, transition.reason))
    return seen


@pytest.mark.parametrize(
    ("start_up", "inputs", "expected", "up_at_end"),
    [
        (False, "C++", [], False),
        (False, "C+++", [(3, True, "3 consecutive probes answered")], True),
        (False, "C++-+++", [(6, True, "3 consecutive probes answered")], True),
        (False, "+++", [], False),
        (False, "+++C++", [], False),
        (True, "--", [], True),
        (True, "---", [(2, False, "3 consecutive probes failed")], False),
        (True, "--+--+", [], True),
        (True, "c", [(0, False, "carrier lost")], False),
        (True, "+c+++C", [(1, False, "carrier lost")], False),
        (
            True,
            "cC+++",
            [(0, False, "carrier lost"), (4, True, "3 consecutive probes answered")],
            True,
        ),
        (
            True,
            "---+++",
            [(2, False, "3 consecutive probes failed"), (5, True, "3 consecutive probes answered")],
            True,
        ),
        (True, "C", [], True),
        (False, "Cc", [], False),
    ],
    ids=[
        "two-good-not-enough",
        "up-after-three",
        "failure-resets-good-streak",
        "no-carrier-probes-ignored",
        "streak-starts-with-carrier",
        "two-failures-not-enough",
        "down-after-three",
        "good-resets-failed-streak",
        "carrier-loss-at-once",
        "carrier-back-needs-probes",
        "carrier-flap",
        "down-and-back-up",
        "carrier-already-present",
        "carrier-loss-while-down",
    ],
)
def test_transitions(
    start_up: bool, inputs: str, expected: list[tuple[int, bool, str]], up_at_end: bool
) -> None:
    machine = LinkStateMachine(
        LinkStateSettings(down_after=3, up_after=3), up=start_up, carrier=start_up
    )
    assert feed(machine, inputs) == expected
    assert machine.up is up_at_end


def test_thresholds_are_configurable() -> None:
    machine = LinkStateMachine(LinkStateSettings(down_after=1, up_after=5), carrier=True)
    assert [t for t, _, _ in feed(machine, "+++++-")] == [4, 5]


def test_cannot_start_up_without_carrier() -> None:
    with pytest.raises(ValueError, match="carrier"):
        LinkStateMachine(up=True, carrier=False)


@pytest.mark.parametrize("settings", [{"down_after": 0}, {"up_after": 0}, {"down": 3}])
def test_bad_settings_are_refused(settings: dict[str, int]) -> None:
    with pytest.raises(ValidationError):
        LinkStateSettings.model_validate(settings)
