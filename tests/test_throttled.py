"""The throttle behind a worker's presence: at once, then at most once per interval, never lost."""

from __future__ import annotations

import threading
import time

from services.throttled import Throttled


class Calls:
    def __init__(self) -> None:
        self.at: list[float] = []
        self.done = threading.Event()

    def __call__(self) -> None:
        self.at.append(time.monotonic())
        self.done.set()


def test_the_first_request_runs_at_once() -> None:
    calls = Calls()
    Throttled(calls, 10.0).request()
    assert len(calls.at) == 1


def test_requests_within_the_interval_run_once_at_its_end() -> None:
    calls = Calls()
    throttled = Throttled(calls, 0.2)
    started = time.monotonic()
    throttled.request()
    calls.done.clear()
    for _ in range(50):
        throttled.request()
    assert len(calls.at) == 1
    assert throttled.pending
    assert calls.done.wait(5)
    assert len(calls.at) == 2
    assert calls.at[1] - started >= 0.19
    time.sleep(0.3)
    assert len(calls.at) == 2, "fifty requests, one deferred run"
    assert not throttled.pending


def test_a_request_after_a_quiet_interval_runs_at_once_again() -> None:
    calls = Calls()
    throttled = Throttled(calls, 0.05)
    throttled.request()
    time.sleep(0.1)
    throttled.request()
    assert len(calls.at) == 2
    assert not throttled.pending


def test_cancel_drops_the_deferred_run() -> None:
    calls = Calls()
    throttled = Throttled(calls, 0.1)
    throttled.request()
    throttled.request()
    throttled.cancel()
    time.sleep(0.25)
    assert len(calls.at) == 1
    assert not throttled.pending
