"""An action run at once, then at most once per interval, its last request never lost.

A PREM worker republishes its retained presence when the version it enforces changes, so that
a gateway or NSA replica starting later reads the version in force. Under a stream of
documents that is one more retained message per document for the broker and every subscriber
(at 100 deliveries/s, half of the messages a gateway decoded), while the statuses already
carry each version as it comes. Throttled, the first change goes out at once and the changes
within the next interval go out as one, at its end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Throttled:
    """`request()` runs `action` now, or at the end of the interval when one ran within it."""

    def __init__(
        self,
        action: Callable[[], object],
        interval_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._action = action
        self._interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last = float("-inf")
        self._timer: threading.Timer | None = None

    def request(self) -> None:
        """Run the action now, or make sure one runs at the end of the current interval."""
        with self._lock:
            if self._timer is not None:
                return  # the deferred run will see this request's state too
            wait = self._last + self._interval_s - self._clock()
            if wait > 0:
                self._timer = threading.Timer(wait, self._deferred)
                self._timer.daemon = True
                self._timer.start()
                return
            self._last = self._clock()
        self._action()

    @property
    def pending(self) -> bool:
        """Whether a deferred run is waiting for the end of the interval."""
        return self._timer is not None

    def cancel(self) -> None:
        """Drop a deferred run (at shutdown: what it would say is said otherwise)."""
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _deferred(self) -> None:
        with self._lock:
            if self._timer is not threading.current_thread():  # cancelled meanwhile
                return
            self._timer = None
            self._last = self._clock()
        self._action()
