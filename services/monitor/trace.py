"""Radio trace files, and their replay against a clock.

A trace is a list of samples `t,signal_dbm,noise_dbm,bitrate_bps,rtt_ms,loss` with `t` in
seconds, strictly increasing. Every column but `t` is optional: a CSV file may leave it out of
the header or leave a cell empty, a JSON-lines file may leave the key out or give null. A sample
holds from its `t` until the next sample's `t`; the last one holds for ever.

Errors name the file, the line (1-based, counting the CSV header) and the column (the CSV column
name, the JSON key, or the character position of a JSON syntax error).
"""

from __future__ import annotations

import bisect
import csv
import itertools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

TRACES_DIR = Path(__file__).parent / "traces"
COLUMNS = ("t", "signal_dbm", "noise_dbm", "bitrate_bps", "rtt_ms", "loss")


class TraceSample(BaseModel):
    """The radio conditions from time `t` (seconds from the start of the trace) on."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    t: float = Field(ge=0)
    signal_dbm: float | None = Field(default=None, le=0)
    noise_dbm: float | None = Field(default=None, le=0)
    bitrate_bps: float | None = Field(default=None, ge=0)
    rtt_ms: float | None = Field(default=None, ge=0)
    loss: float | None = Field(default=None, ge=0, le=1)


class TraceError(ValueError):
    """A trace file that cannot be used: where (source, line, column) and why."""

    def __init__(self, source: str, line: int, column: str | None, reason: str) -> None:
        self.source = source
        self.line = line
        self.column = column
        self.reason = reason
        where = f"{source}:{line}" + (f": column {column!r}" if column is not None else "")
        super().__init__(f"{where}: {reason}")


def parse_csv(text: str, *, source: str = "<csv>") -> tuple[TraceSample, ...]:
    """Parse CSV text with a header line naming the columns. Blank lines are skipped."""
    header: list[str] | None = None
    rows: list[tuple[int, dict[str, Any]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        cells = [cell.strip() for cell in next(csv.reader([line]))]
        if header is None:
            header = _check_header(cells, source, number)
            continue
        if len(cells) != len(header):
            raise TraceError(
                source, number, None, f"{len(cells)} cells, the header has {len(header)}"
            )
        rows.append(
            (number, {name: cell for name, cell in zip(header, cells, strict=True) if cell != ""})
        )
    if header is None:
        raise TraceError(source, 1, None, "no header line")
    return _validate(rows, source, strict=False)


def parse_jsonl(text: str, *, source: str = "<jsonl>") -> tuple[TraceSample, ...]:
    """Parse JSON lines, one object per line. Blank lines are skipped."""
    rows: list[tuple[int, dict[str, Any]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TraceError(source, number, f"char {exc.colno}", exc.msg) from exc
        if not isinstance(item, dict):
            raise TraceError(source, number, None, "not a JSON object")
        rows.append((number, item))
    return _validate(rows, source, strict=True)


def load_trace(path: Path) -> tuple[TraceSample, ...]:
    """Read a `.csv` or `.jsonl` trace file."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".csv":
        return parse_csv(text, source=str(path))
    if path.suffix in (".jsonl", ".ndjson"):
        return parse_jsonl(text, source=str(path))
    raise TraceError(str(path), 1, None, "unknown trace format (use .csv or .jsonl)")


def bundled_trace(name: str) -> Path:
    """The path of a trace shipped in `services/monitor/traces/`."""
    path = TRACES_DIR / name
    if not path.is_file():
        raise FileNotFoundError(path)
    return path


def _check_header(cells: list[str], source: str, number: int) -> list[str]:
    seen: set[str] = set()
    for cell in cells:
        if cell not in COLUMNS:
            raise TraceError(source, number, cell, f"unknown column; known: {', '.join(COLUMNS)}")
        if cell in seen:
            raise TraceError(source, number, cell, "column named twice")
        seen.add(cell)
    if "t" not in seen:
        raise TraceError(source, number, "t", "the header has no 't' column")
    return cells


def _validate(
    rows: list[tuple[int, dict[str, Any]]], source: str, *, strict: bool
) -> tuple[TraceSample, ...]:
    samples: list[TraceSample] = []
    for number, row in rows:
        try:
            sample = TraceSample.model_validate(row, strict=strict)
        except ValidationError as exc:
            first = exc.errors()[0]
            column = str(first["loc"][0]) if first["loc"] else None
            raise TraceError(source, number, column, first["msg"]) from exc
        if samples and sample.t <= samples[-1].t:
            raise TraceError(
                source, number, "t", f"t={sample.t:g} does not follow t={samples[-1].t:g}"
            )
        samples.append(sample)
    if not samples:
        raise TraceError(source, 1, None, "no samples")
    return tuple(samples)


class TraceReplay:
    """Plays a trace against a clock: trace time runs `speed` times as fast as `now`.

    At `now == start` the first sample is in force; before `start` nothing is.
    """

    def __init__(self, samples: Sequence[TraceSample], *, start: float, speed: float = 1.0) -> None:
        if not samples:
            raise ValueError("a replay needs at least one sample")
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed}")
        times = [sample.t for sample in samples]
        if any(later <= earlier for earlier, later in itertools.pairwise(times)):
            raise ValueError("sample times must be strictly increasing")
        self._samples = tuple(samples)
        self._times = times
        self._start = start
        self._speed = speed

    @property
    def duration_s(self) -> float:
        """Wall-clock time from `start` until the last sample takes effect."""
        return (self._times[-1] - self._times[0]) / self._speed

    def trace_time(self, now: float) -> float:
        """The trace's `t` that corresponds to wall-clock `now`."""
        return self._times[0] + (now - self._start) * self._speed

    def at(self, now: float) -> TraceSample | None:
        """The sample in force at `now`, or None before the start."""
        index = bisect.bisect_right(self._times, self.trace_time(now)) - 1
        return self._samples[index] if index >= 0 else None

    def next_change(self, now: float) -> float | None:
        """The wall-clock time at which the next sample takes effect, or None after the last."""
        index = bisect.bisect_right(self._times, self.trace_time(now))
        if index >= len(self._times):
            return None
        due = self._times[index]
        wall = self._start + (due - self._times[0]) / self._speed
        # Rounding can map `wall` back to just before `due`; step up until `at(wall)` has moved
        # on, so a caller that sleeps until `next_change` never sees the old sample again.
        while self.trace_time(wall) < due:
            wall = math.nextafter(wall, math.inf)
        return wall
