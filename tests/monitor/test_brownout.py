"""The brownout detector, and the tracker's immediate report: pure, on a fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from services.contracts.messages import Envelope, LinkMetrics
from services.monitor.brownout import BrownoutDetector, BrownoutSettings, Edge
from services.monitor.change import ChangeSettings
from services.monitor.config import LinkConfig
from services.monitor.link import LinkTracker
from services.monitor.netlink import InterfaceState
from services.monitor.state import LinkStateSettings
from services.monitor.stats import ProbeSettings

UP = InterfaceState("eth0", True, 7, True, True, ("2001:db8:1::10",))


def test_a_delay_step_is_detected_at_the_first_probe_over_the_threshold() -> None:
    detector = BrownoutDetector(delay_ms=50.0, loss=None)
    for _ in range(20):
        assert detector.answered(20.0) is None
    event = detector.answered(120.0)
    assert event is not None
    assert event.edge is Edge.ONSET
    assert event.reason == "rtt 120.0 ms > 50 ms"
    assert detector.active


def test_a_probe_at_the_threshold_is_not_a_brownout() -> None:
    detector = BrownoutDetector(delay_ms=50.0, loss=None)
    assert detector.answered(50.0) is None


def test_a_loss_burst_is_detected_over_the_short_window() -> None:
    detector = BrownoutDetector(delay_ms=None, loss=0.2, settings=BrownoutSettings(window=10))
    for _ in range(10):
        assert detector.answered(20.0) is None
    assert detector.lost() is None  # 10 %
    assert detector.lost() is None  # 20 %: not over
    event = detector.lost()  # 30 %
    assert event is not None
    assert event.edge is Edge.ONSET
    assert event.loss == pytest.approx(0.3)
    assert "loss 30%" in event.reason


def test_oscillation_around_the_threshold_gives_one_onset_not_one_per_probe() -> None:
    detector = BrownoutDetector(delay_ms=50.0, loss=None)
    events = [detector.answered(rtt) for rtt in [45.0, 55.0] * 50]
    edges = [e.edge for e in events if e is not None]
    # 45 ms is above 80 % of 50 ms: never healthy enough to clear.
    assert edges == [Edge.ONSET]
    assert detector.onsets == 1


def test_it_clears_after_enough_healthy_probes_and_can_fire_again() -> None:
    detector = BrownoutDetector(delay_ms=50.0, loss=None, settings=BrownoutSettings(clear_after=5))
    assert detector.answered(100.0) is not None
    results = [detector.answered(20.0) for _ in range(5)]
    assert results[:4] == [None] * 4
    clear = results[4]
    assert clear is not None
    assert clear.edge is Edge.CLEAR
    assert not detector.active
    again = detector.answered(100.0)
    assert again is not None
    assert again.edge is Edge.ONSET
    assert detector.onsets == 2


def test_a_lost_probe_restarts_the_healthy_count() -> None:
    detector = BrownoutDetector(delay_ms=50.0, loss=None, settings=BrownoutSettings(clear_after=3))
    detector.answered(100.0)
    detector.answered(20.0)
    detector.answered(20.0)
    assert detector.lost() is None
    assert detector.answered(20.0) is None
    assert detector.answered(20.0) is None
    event = detector.answered(20.0)
    assert event is not None
    assert event.edge is Edge.CLEAR


def test_a_detector_needs_a_threshold() -> None:
    with pytest.raises(ValueError, match="threshold"):
        BrownoutDetector(delay_ms=None, loss=None)


def _tracker(**link: Any) -> LinkTracker:
    config: dict[str, Any] = {
        "interface": "eth0",
        "bid": 1,
        "technology": "wlan",
        "probe": {"target": "2001:db8:1::1"},
        **link,
    }
    return LinkTracker(
        "mr1",
        LinkConfig.model_validate(config),
        window=ProbeSettings(window=20),
        state=LinkStateSettings(),
        publish=ChangeSettings(period_s=10.0, delay_delta_ms=1000.0, loss_delta=0.5),
        initial=UP,
        now=0.0,
        probe_bytes_per_hour=4320.0,
    )


def _metrics(messages: list[Envelope]) -> list[LinkMetrics]:
    return [m for m in messages if isinstance(m, LinkMetrics)]


def _answer(tracker: LinkTracker, seq: int, at: float, rtt_s: float) -> list[Envelope]:
    tracker.probe_sent(seq, at)
    return tracker.answered([seq], at + rtt_s)


def test_the_tracker_reports_at_once_at_the_onset_with_the_probes_rtt() -> None:
    tracker = _tracker(brownout_delay_ms=50.0)
    assert _metrics(tracker.tick(0.0))  # the first periodic report
    _answer(tracker, 1, 0.1, 0.020)  # the first RTT is material (none -> 20 ms)
    for seq in range(2, 21):
        # Thresholds of material change are huge here: nothing but the period would publish.
        assert not _metrics(_answer(tracker, seq, seq * 0.1, 0.020))
    (report,) = _metrics(_answer(tracker, 21, 2.1, 0.150))
    # The EWMA alone would say about 36 ms; the report says what the link does now.
    assert report.rtt_ms == pytest.approx(150.0)
    assert report.probe_bytes_per_hour == 4320.0
    assert tracker.in_brownout
    # Further slow probes are no new edge: nothing until the period.
    assert not _metrics(_answer(tracker, 22, 2.2, 0.160))


def test_the_tracker_reports_the_clear_too() -> None:
    tracker = _tracker(brownout_delay_ms=50.0)
    tracker.tick(0.0)
    _answer(tracker, 1, 0.1, 0.150)
    reports = [_metrics(_answer(tracker, seq, seq * 0.1, 0.010)) for seq in range(2, 7)]
    assert [len(r) for r in reports] == [0, 0, 0, 0, 1]
    assert not tracker.in_brownout


def test_a_loss_burst_reports_at_once() -> None:
    tracker = _tracker(brownout_loss=0.2)
    tracker.tick(0.0)
    for seq in range(1, 11):
        _answer(tracker, seq, seq * 0.1, 0.010)
    found = []
    for seq in range(11, 14):
        tracker.probe_sent(seq, seq * 0.1)
        found += _metrics(tracker.expire(seq * 0.1 + 1.01, 1.0))
    (report,) = found
    assert report.loss == pytest.approx(0.3, abs=0.01)


def test_brownout_thresholds_need_a_probe() -> None:
    with pytest.raises(ValueError, match="need a probe"):
        LinkConfig.model_validate(
            {"interface": "eth0", "bid": 1, "technology": "wlan", "brownout_delay_ms": 50}
        )
