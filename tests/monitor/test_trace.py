"""Trace files: parsing, errors that name line and column, replay at speed 1 and 10."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.monitor.trace import (
    TraceError,
    TraceReplay,
    TraceSample,
    bundled_trace,
    load_trace,
    parse_csv,
    parse_jsonl,
)

CSV = """t,signal_dbm,noise_dbm,bitrate_bps,rtt_ms,loss
0,-45,-95,65000000,2.4,0
1.5,-60,,39000000,,0.01

3,-80,-95,13000000,5.0,0.2
"""


def test_csv_parses_with_optional_cells() -> None:
    samples = parse_csv(CSV)
    assert [s.t for s in samples] == [0.0, 1.5, 3.0]
    assert samples[1] == TraceSample(t=1.5, signal_dbm=-60, bitrate_bps=39e6, loss=0.01)


def test_csv_columns_other_than_t_are_optional() -> None:
    assert parse_csv("t\n0\n2\n") == (TraceSample(t=0), TraceSample(t=2))
    assert parse_csv("rtt_ms,t\n40,0\n")[0].rtt_ms == 40


def test_jsonl_parses_the_same_keys() -> None:
    text = '{"t": 0, "signal_dbm": -45, "rtt_ms": 2.4}\n\n{"t": 1.5, "loss": null}\n'
    assert parse_jsonl(text) == (
        TraceSample(t=0, signal_dbm=-45, rtt_ms=2.4),
        TraceSample(t=1.5),
    )


@pytest.mark.parametrize(
    ("text", "line", "column", "reason"),
    [
        ("t,rssi\n0,-40\n", 1, "rssi", "unknown column"),
        ("t,loss,loss\n", 1, "loss", "column named twice"),
        ("signal_dbm\n-40\n", 1, "t", "no 't' column"),
        ("", 1, None, "no header line"),
        ("t,loss\n", 1, None, "no samples"),
        ("t,loss\n0,0\n1,0,3\n", 3, None, "3 cells, the header has 2"),
        ("t,loss\n0,0\n1,1.5\n", 3, "loss", "less than or equal to 1"),
        ("t,rtt_ms\n0,fast\n", 2, "rtt_ms", "valid number"),
        ("t,rtt_ms\n0,nan\n", 2, "rtt_ms", "finite number"),
        ("t,rtt_ms\n,40\n", 2, "t", "Field required"),
        ("t\n0\n2\n\n2\n", 5, "t", "t=2 does not follow t=2"),
        ("t\n0\n2\n1\n", 4, "t", "t=1 does not follow t=2"),
        ("t,signal_dbm\n0,12\n", 2, "signal_dbm", "less than or equal to 0"),
    ],
    ids=[
        "unknown-column",
        "duplicate-column",
        "no-t-column",
        "empty-file",
        "header-only",
        "ragged-row",
        "loss-above-one",
        "not-a-number",
        "nan",
        "missing-t",
        "t-repeated",
        "t-goes-back",
        "positive-dbm",
    ],
)
def test_csv_errors_name_line_and_column(
    text: str, line: int, column: str | None, reason: str
) -> None:
    with pytest.raises(TraceError) as caught:
        parse_csv(text, source="x.csv")
    error = caught.value
    assert (error.source, error.line, error.column) == ("x.csv", line, column)
    assert reason in error.reason
    assert str(error).startswith(f"x.csv:{line}")
    if column is not None:
        assert f"column {column!r}" in str(error)


@pytest.mark.parametrize(
    ("text", "line", "column", "reason"),
    [
        ('{"t": 0}\n{"t": 1, "rssi": -40}\n', 2, "rssi", "Extra inputs"),
        ('{"t": 0}\n{"t": 1,, }\n', 2, "char 9", "Expecting"),
        ('{"t": 0}\n[1, 2]\n', 2, None, "not a JSON object"),
        ('{"t": 0, "rtt_ms": "40"}\n', 1, "rtt_ms", "valid number"),
        ('{"t": 0}\n{"t": 0}\n', 2, "t", "does not follow"),
        ('{"loss": 0}\n', 1, "t", "Field required"),
        ("\n\n", 1, None, "no samples"),
    ],
    ids=[
        "unknown-key",
        "syntax-error",
        "not-an-object",
        "string-number",
        "t-repeated",
        "missing-t",
        "empty",
    ],
)
def test_jsonl_errors_name_line_and_column(
    text: str, line: int, column: str | None, reason: str
) -> None:
    with pytest.raises(TraceError) as caught:
        parse_jsonl(text, source="x.jsonl")
    assert (caught.value.line, caught.value.column) == (line, column)
    assert reason in caught.value.reason


def test_load_trace_by_suffix(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"t": 0, "loss": 0.5}\n')
    (tmp_path / "b.csv").write_text("t,loss\n0,0.5\n")
    (tmp_path / "c.txt").write_text("t\n0\n")
    assert load_trace(tmp_path / "a.jsonl") == load_trace(tmp_path / "b.csv")
    with pytest.raises(TraceError, match="unknown trace format"):
        load_trace(tmp_path / "c.txt")


@pytest.mark.parametrize(
    ("name", "count", "first_t", "last_t"),
    [("walk_out_of_wlan.csv", 61, 0, 60), ("cellular_handover_dip.csv", 81, 0, 40)],
)
def test_bundled_traces_load(name: str, count: int, first_t: float, last_t: float) -> None:
    samples = load_trace(bundled_trace(name))
    assert len(samples) == count
    assert (samples[0].t, samples[-1].t) == (first_t, last_t)


def test_walk_out_of_wlan_degrades() -> None:
    samples = load_trace(bundled_trace("walk_out_of_wlan.csv"))
    first, last = samples[0], samples[-1]
    assert first.signal_dbm == -45
    assert last.signal_dbm == -90
    assert first.bitrate_bps is not None
    assert last.bitrate_bps is not None
    assert last.bitrate_bps < first.bitrate_bps
    assert first.loss == 0
    assert last.loss is not None
    assert last.loss > 0.5


def test_cellular_dip_is_short_and_in_the_middle() -> None:
    samples = load_trace(bundled_trace("cellular_handover_dip.csv"))
    spiky = [s.t for s in samples if (s.rtt_ms or 0) > 100 or (s.loss or 0) > 0]
    assert spiky
    assert 15 < spiky[0] < spiky[-1] < 25
    assert 2 <= spiky[-1] - spiky[0] + 0.5 <= 3
    assert all(s.noise_dbm is None for s in samples)


def test_bundled_trace_missing() -> None:
    with pytest.raises(FileNotFoundError):
        bundled_trace("nope.csv")


SAMPLES = parse_csv("t,rtt_ms\n10,40\n12,80\n20,45\n")


@pytest.mark.parametrize(
    ("speed", "now", "rtt_ms", "next_change"),
    [
        (1, 99.0, None, 100.0),
        (1, 100.0, 40, 102.0),
        (1, 101.9, 40, 102.0),
        (1, 102.0, 80, 110.0),
        (1, 109.0, 80, 110.0),
        (1, 110.0, 45, None),
        (1, 500.0, 45, None),
        (10, 99.0, None, 100.0),
        (10, 100.0, 40, 100.2),
        (10, 100.19, 40, 100.2),
        (10, 100.2, 80, 101.0),
        (10, 100.99, 80, 101.0),
        (10, 101.0, 45, None),
    ],
)
def test_replay(speed: float, now: float, rtt_ms: float | None, next_change: float | None) -> None:
    replay = TraceReplay(SAMPLES, start=100.0, speed=speed)
    sample = replay.at(now)
    assert (sample.rtt_ms if sample else None) == rtt_ms
    got = replay.next_change(now)
    assert got == (None if next_change is None else pytest.approx(next_change))


def test_replay_duration_scales_with_speed() -> None:
    assert TraceReplay(SAMPLES, start=0, speed=1).duration_s == 10
    assert TraceReplay(SAMPLES, start=0, speed=10).duration_s == pytest.approx(1)


def test_replay_steps_through_every_sample_by_next_change() -> None:
    samples = load_trace(bundled_trace("cellular_handover_dip.csv"))
    replay = TraceReplay(samples, start=1000.0, speed=10)
    now: float | None = 1000.0
    seen = []
    while now is not None:
        sample = replay.at(now)
        assert sample is not None
        seen.append(sample)
        now = replay.next_change(now)
    assert tuple(seen) == samples


@pytest.mark.parametrize(
    ("samples", "speed", "match"),
    [
        ((), 1, "at least one"),
        (SAMPLES, 0, "positive"),
        (SAMPLES, -1, "positive"),
        ((TraceSample(t=1), TraceSample(t=1)), 1, "strictly increasing"),
    ],
)
def test_replay_refuses(samples: tuple[TraceSample, ...], speed: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TraceReplay(samples, start=0, speed=speed)


@settings(max_examples=300, deadline=None)
@given(
    gaps=st.lists(st.floats(0.001, 100), min_size=1, max_size=30),
    first=st.floats(0, 1e4),
    start=st.floats(-1e6, 1e6),
    speed=st.floats(0.01, 1000),
)
def test_next_change_always_moves_on(
    gaps: list[float], first: float, start: float, speed: float
) -> None:
    times = [first]
    for gap in gaps:
        times.append(times[-1] + gap)
    if any(later <= earlier for earlier, later in itertools.pairwise(times)):
        return
    samples = tuple(TraceSample(t=t) for t in times)
    replay = TraceReplay(samples, start=start, speed=speed)
    now: float | None = start
    seen = []
    while now is not None:
        sample = replay.at(now)
        assert sample is not None
        seen.append(sample)
        now = replay.next_change(now)
    assert tuple(seen) == samples
