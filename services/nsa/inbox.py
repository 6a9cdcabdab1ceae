"""The bounded hand-off from the MQTT and delivery threads to the decision thread.

The decision thread takes everything waiting at once (a batch), so a burst for one router is
decided once. When the inbox is full, metrics are dropped (`offer`: the monitor's next period
replaces them, and blocking paho's thread would stall the broker connection), while inputs
that are not repeated (binding events, statuses, call results) wait for room (`put`). Control
items (stop, reload) bypass the bound: a signal handler must never block.

Thousands of items a second pass through here, so the common path takes no lock: CPython's
deque appends and pops are atomic, and the lock is only taken to sleep or to wake a sleeper
(a locked hand-off measured 7 % of the process's time, mostly GIL hand-overs on contention).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Inbox(Generic[T]):
    """A bounded multi-producer, single-consumer queue that hands over batches."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self.capacity = capacity
        self._items: deque[T] = deque()
        self._lock = threading.Lock()
        self._readable = threading.Condition(self._lock)
        self._writable = threading.Condition(self._lock)
        self._consumer_waiting = False
        self._producers_waiting = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, item: T) -> bool:
        """Add `item` unless the inbox is full (then count it as dropped); never blocks."""
        if len(self._items) >= self.capacity:
            self.dropped += 1
            return False
        self._items.append(item)
        self._wake_consumer()
        return True

    def offer_many(self, items: list[T]) -> int:
        """Add as many of `items` as there is room for (the rest count as dropped); never
        blocks. Returns how many were added."""
        room = max(0, self.capacity - len(self._items))
        taken = items if len(items) <= room else items[:room]
        self.dropped += len(items) - len(taken)
        self._items.extend(taken)
        if taken:
            self._wake_consumer()
        return len(taken)

    def put(self, item: T) -> None:
        """Add `item`, waiting for room while the inbox is full."""
        if len(self._items) >= self.capacity:
            with self._lock:
                self._producers_waiting += 1
                try:
                    self._writable.wait_for(lambda: len(self._items) < self.capacity)
                finally:
                    self._producers_waiting -= 1
        self._items.append(item)
        self._wake_consumer()

    def put_control(self, item: T) -> None:
        """Add `item` whatever the bound (stop, reload, a fatal error)."""
        self._items.append(item)
        with self._lock:
            self._readable.notify()

    def take(self, timeout_s: float | None, limit: int) -> list[T]:
        """Up to `limit` items, waiting up to `timeout_s` (None: forever) for the first."""
        if not self._items and (timeout_s is None or timeout_s > 0):
            with self._lock:
                self._consumer_waiting = True
                try:
                    # Checked again under the lock: a producer that appended before seeing
                    # the flag did not notify.
                    self._readable.wait_for(lambda: bool(self._items), timeout_s)
                finally:
                    self._consumer_waiting = False
        items = self._items
        batch = [items.popleft() for _ in range(min(limit, len(items)))]
        if batch and self._producers_waiting:
            with self._lock:
                self._writable.notify_all()
        return batch

    def _wake_consumer(self) -> None:
        if self._consumer_waiting:
            with self._lock:
                self._readable.notify()
