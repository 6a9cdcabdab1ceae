"""A fixed-capacity ring of samples for sparklines: one time column and a few value columns.

Each column is an array allocated once, the times as doubles and the values as 32-bit floats
(seven significant digits: plenty for a sparkline), so a link's few minutes of history cost
`capacity * (8 + 4 * fields)` bytes whatever arrives; a missing value is stored as NaN and
comes out as None (JSON has no NaN).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence

_NAN = math.nan


class Ring:
    """The last `capacity` samples (time, values), oldest first when read."""

    __slots__ = ("_columns", "_count", "_next", "_time", "capacity", "fields")

    def __init__(self, capacity: int, fields: Sequence[str]) -> None:
        if capacity < 1:
            raise ValueError("a ring holds at least one sample")
        self.capacity = capacity
        self.fields = tuple(fields)
        self._time = array("d", [0.0]) * capacity
        self._columns = [array("f", [_NAN]) * capacity for _ in self.fields]
        self._next = 0
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def append(self, at: float, values: Sequence[float | None]) -> None:
        """Add one sample (one value per field, None where there is none)."""
        i = self._next
        self._time[i] = at
        for column, value in zip(self._columns, values, strict=True):
            column[i] = _NAN if value is None else value
        self._next = (i + 1) % self.capacity
        self._count = min(self._count + 1, self.capacity)

    def last_time(self) -> float | None:
        """The time of the newest sample, None when empty."""
        if not self._count:
            return None
        return self._time[(self._next - 1) % self.capacity]

    def since(self, after: float | None = None) -> dict[str, list[float | None]]:
        """Columns `t` and each field, oldest first, of the samples newer than `after`."""
        start = (self._next - self._count) % self.capacity
        indices = [(start + k) % self.capacity for k in range(self._count)]
        if after is not None:
            indices = [i for i in indices if self._time[i] > after]
        out: dict[str, list[float | None]] = {"t": [self._time[i] for i in indices]}
        for name, column in zip(self.fields, self._columns, strict=True):
            out[name] = [None if math.isnan(column[i]) else column[i] for i in indices]
        return out
