"""Probe statistics: RTT, RFC 3550 jitter, loss over the window, late answers."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.monitor.stats import ProbeSettings, ProbeStats, ProbeWindow

# Each event: ("sent", seq, now) | ("answered", seq, now) | ("timeout", now, timeout_s)
Event = tuple[str, float, float]


def run(events: list[Event], **settings: float) -> ProbeStats:
    window = ProbeWindow(ProbeSettings.model_validate(settings))
    for kind, a, b in events:
        if kind == "sent":
            window.sent(int(a), b)
        elif kind == "answered":
            window.answered(int(a), b)
        else:
            window.timed_out(a, b)
    return window.snapshot()


def approx(value: float | None) -> object:
    return None if value is None else pytest.approx(value)


@pytest.mark.parametrize(
    ("events", "settings", "expected"),
    [
        (
            [],
            {},
            {"answered": 0, "lost": 0, "pending": 0, "late": 0, "loss": None, "rtt_last_ms": None},
        ),
        (
            [("sent", 1, 0.0)],
            {},
            {"answered": 0, "lost": 0, "pending": 1, "loss": None, "rtt_last_ms": None},
        ),
        (
            [("sent", 1, 0.0), ("answered", 1, 0.040)],
            {},
            {
                "answered": 1,
                "lost": 0,
                "pending": 0,
                "loss": 0.0,
                "rtt_last_ms": 40.0,
                "rtt_mean_ms": 40.0,
                "rtt_ewma_ms": 40.0,
                "jitter_ms": None,
            },
        ),
        (
            [("sent", 1, 0.0), ("answered", 1, 0.040), ("sent", 2, 1.0), ("answered", 2, 1.080)],
            {"ewma_alpha": 0.5},
            {
                "answered": 2,
                "rtt_last_ms": 80.0,
                "rtt_mean_ms": 60.0,
                "rtt_ewma_ms": 60.0,
                "jitter_ms": 40.0 / 16,
            },
        ),
        (
            [("sent", 1, 0.0), ("sent", 2, 1.0), ("timeout", 2.5, 2.0), ("answered", 2, 1.1)],
            {},
            {"answered": 1, "lost": 1, "pending": 0, "loss": 0.5, "rtt_last_ms": 100.0},
        ),
        (
            [("sent", 1, 0.0), ("timeout", 2.0, 2.0)],
            {},
            {"lost": 0, "pending": 1, "loss": None},
        ),
        (
            [("sent", 1, 0.0), ("timeout", 3.0, 2.0), ("answered", 1, 3.1), ("answered", 9, 3.2)],
            {},
            {"answered": 0, "lost": 1, "late": 2, "loss": 1.0, "rtt_last_ms": None},
        ),
        (
            [("sent", 1, 0.0), ("answered", 1, 0.01), ("answered", 1, 0.02)],
            {},
            {"answered": 1, "late": 1, "loss": 0.0},
        ),
        (
            [
                ("sent", 1, 0.0),
                ("timeout", 3.0, 2.0),
                ("sent", 2, 3.0),
                ("answered", 2, 3.01),
                ("sent", 3, 4.0),
                ("answered", 3, 4.01),
            ],
            {"window": 2},
            {"answered": 2, "lost": 0, "loss": 0.0, "rtt_mean_ms": 10.0},
        ),
        (
            [("sent", 1, 0.0), ("sent", 2, 1.0), ("sent", 3, 2.0)],
            {"window": 2},
            {"answered": 0, "lost": 1, "pending": 2, "loss": 1.0},
        ),
    ],
    ids=[
        "empty",
        "one-in-flight",
        "one-answered",
        "ewma-and-jitter",
        "timeout-then-answer",
        "not-yet-timed-out",
        "late-and-unknown-answers",
        "duplicate-answer",
        "loss-slides-out-of-window",
        "too-many-outstanding",
    ],
)
def test_window(
    events: list[Event], settings: dict[str, float], expected: dict[str, object]
) -> None:
    stats = run(events, **settings)
    for name, value in expected.items():
        got = getattr(stats, name)
        assert got == (approx(value) if isinstance(value, float) else value), name


def test_jitter_follows_rfc3550_recurrence() -> None:
    window = ProbeWindow()
    rtts = [0.050, 0.070, 0.040, 0.040, 0.100]
    jitter = 0.0
    for seq, rtt in enumerate(rtts):
        window.sent(seq, float(seq))
        window.answered(seq, seq + rtt)
        if seq:
            jitter += (abs(rtt - rtts[seq - 1]) - jitter) / 16
    assert window.snapshot().jitter_ms == pytest.approx(jitter * 1000)


def test_ewma_converges_to_a_constant_rtt() -> None:
    window = ProbeWindow(ProbeSettings(ewma_alpha=0.25))
    window.sent(0, 0.0)
    window.answered(0, 0.200)
    for seq in range(1, 60):
        window.sent(seq, float(seq))
        window.answered(seq, seq + 0.020)
    stats = window.snapshot()
    assert stats.rtt_ewma_ms == pytest.approx(20.0, abs=0.01)
    assert stats.jitter_ms is not None
    assert stats.jitter_ms < 180.0 / 16


def test_timed_out_returns_the_lost_sequence_numbers() -> None:
    window = ProbeWindow()
    for seq in range(4):
        window.sent(seq, float(seq))
    assert window.timed_out(4.0, 1.5) == (0, 1, 2)
    assert window.timed_out(4.0, 1.5) == ()


@pytest.mark.parametrize(
    "call",
    [
        lambda w: w.sent(1, 1.0),
        lambda w: w.answered(1, -1.0),
        lambda w: w.timed_out(1.0, -0.1),
    ],
    ids=["seq-outstanding", "answer-before-send", "negative-timeout"],
)
def test_caller_bugs_are_refused(call: object) -> None:
    window = ProbeWindow()
    window.sent(1, 0.0)
    with pytest.raises(ValueError):
        call(window)  # type: ignore[operator]


@pytest.mark.parametrize(
    "settings",
    [{"window": 0}, {"ewma_alpha": 0}, {"ewma_alpha": 1.5}, {"size": 3}],
    ids=["empty-window", "zero-alpha", "alpha-above-one", "unknown-key"],
)
def test_bad_settings_are_refused(settings: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        ProbeSettings.model_validate(settings)
