"""Material-change detection against the last published values, and the periodic deadline."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.monitor.change import ChangeDetector, ChangeSettings

LAST = (0.02, 50.0, 5.0)  # loss, rtt_ms, jitter_ms published at t=0


@pytest.mark.parametrize(
    ("settings", "now_values", "expected"),
    [
        ({}, (0.02, 50.0, 5.0), None),
        ({}, (0.029, 79.9, 50.0), None),
        ({}, (0.03, 50.0, 5.0), "loss 2% -> 3%"),
        ({}, (0.01, 50.0, 5.0), "loss 2% -> 1%"),
        ({}, (0.02, 80.0, 5.0), "rtt 50 ms -> 80 ms"),
        ({}, (0.02, 20.0, 5.0), "rtt 50 ms -> 20 ms"),
        ({}, (None, 50.0, 5.0), "loss 2% -> none"),
        ({}, (0.02, None, 5.0), "rtt 50 ms -> none"),
        ({"jitter_delta_ms": 10}, (0.02, 50.0, 15.0), "jitter 5 ms -> 15 ms"),
        ({"loss_delta": 0.05}, (0.06, 50.0, 5.0), None),
        ({"delay_delta_ms": 5}, (0.02, 55.0, 5.0), "rtt 50 ms -> 55 ms"),
    ],
    ids=[
        "same",
        "below-thresholds",
        "loss-up-one-point",
        "loss-down-one-point",
        "rtt-up-30ms",
        "rtt-down-30ms",
        "loss-disappears",
        "rtt-disappears",
        "jitter-when-enabled",
        "custom-loss-threshold",
        "custom-delay-threshold",
    ],
)
def test_material(
    settings: dict[str, float],
    now_values: tuple[float | None, float | None, float | None],
    expected: str | None,
) -> None:
    detector = ChangeDetector(ChangeSettings.model_validate(settings))
    detector.published(0.0, *LAST)
    assert detector.material(*now_values) == expected


def test_drift_is_measured_from_the_last_publication() -> None:
    detector = ChangeDetector()
    detector.published(0.0, 0.0, 40.0)
    assert detector.should_publish(1.0, 0.0, 60.0) is None
    assert detector.should_publish(2.0, 0.0, 69.0) is None
    assert detector.should_publish(3.0, 0.0, 70.0) == "rtt 40 ms -> 70 ms"
    detector.published(3.0, 0.0, 70.0)
    assert detector.should_publish(4.0, 0.0, 80.0) is None


@pytest.mark.parametrize(
    ("now", "due"),
    [(0.0, False), (9.99, False), (10.0, True), (25.0, True)],
)
def test_due_after_the_period(now: float, due: bool) -> None:
    detector = ChangeDetector(ChangeSettings(period_s=10))
    detector.published(0.0, 0.0, 40.0)
    assert detector.due(now) is due
    assert detector.should_publish(now, 0.0, 40.0) == ("period" if due else None)


def test_first_publication_is_immediate() -> None:
    detector = ChangeDetector()
    assert detector.last is None
    assert detector.due(0.0)
    assert detector.should_publish(0.0, None, None) == "first publication"


def test_material_change_wins_over_period() -> None:
    detector = ChangeDetector(ChangeSettings(period_s=1))
    detector.published(0.0, 0.0, 40.0)
    assert detector.should_publish(5.0, 0.5, 40.0) == "loss 0% -> 50%"


@pytest.mark.parametrize(
    "settings",
    [{"period_s": 0}, {"loss_delta": 0}, {"loss_delta": 2}, {"delay_delta_ms": -1}, {"x": 1}],
)
def test_bad_settings_are_refused(settings: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        ChangeSettings.model_validate(settings)
