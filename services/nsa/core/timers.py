"""The decision thread's timers: one heap, entries checked when they fire.

An entry is never removed when its reason goes away (a later decision moves a router's wake
time, a call is answered before its deadline); the engine checks, when an entry fires,
whether it still stands. That keeps pushing cheap at thousands of routers.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from enum import Enum


class TimerKind(Enum):
    """Why the engine wants to be woken."""

    WAKE = "wake"  # a decision's wake_at (dwell time, metrics age)
    REFRESH = "refresh"  # decide again after refresh_s without a decision
    RETRY = "retry"  # the back-off after a failed call is over
    DEADLINE = "deadline"  # a call got no answer in time
    HOLD = "hold"  # the start-up hold is over (every router)
    READY = "ready"  # a router's first period is over


class Timers:
    """A heap of (time, kind, router, call ident) in firing order."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerKind, str, int]] = []
        self._sequence = 0

    def push(self, at: float, kind: TimerKind, mobile_router: str = "", ident: int = 0) -> None:
        """Fire `kind` for `mobile_router` at `at` (`ident`: the call of a DEADLINE)."""
        self._sequence += 1
        heapq.heappush(self._heap, (at, self._sequence, kind, mobile_router, ident))

    def next_deadline(self) -> float | None:
        """When the earliest entry is due (None: no entry)."""
        return self._heap[0][0] if self._heap else None

    def due(self, now: float) -> Iterator[tuple[float, TimerKind, str, int]]:
        """Pop every entry due at `now`, in order (entries pushed meanwhile included)."""
        while self._heap and self._heap[0][0] <= now:
            at, _, kind, mobile_router, ident = heapq.heappop(self._heap)
            yield at, kind, mobile_router, ident
