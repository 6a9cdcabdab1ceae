"""LinkWatcher against a real kernel: carrier loss, admin down, removed devices, emptied tables.

Each scenario runs entirely inside a namespace (in a `call_in` child): the watcher must be
started in the netns it watches, and plain `ip` commands there change that netns. The child
returns what it measured; the parent asserts.
"""

from __future__ import annotations

import logging
import os
import queue
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from services import netns
from services.prem.config import PremSettings
from services.prem.linkwatch import LinkWatcher

pytestmark = pytest.mark.kernel

DEADLINE = 5.0
NONE: frozenset[int] = frozenset()
BID1: frozenset[int] = frozenset({1})
TRIALS = 10

CFG = PremSettings.model_validate(
    {
        "node": "mr1",
        "role": "mr",
        "mobile_router": "mr1",
        "bids": [{"bid": 1, "interface": "mr0"}, {"bid": 2}],
    }
)


def ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True)


def add_veth() -> None:
    """mr0 (BID 1's device) and its peer, each with an ifindex unique on this machine."""
    base = 1000 + (os.getpid() % 20000) * 2
    ip("link", "add", "mr0", "index", str(base), "type", "veth",
       "peer", "name", "mr0p", "index", str(base + 1))  # fmt: skip
    ip("link", "set", "mr0", "up")
    ip("link", "set", "mr0p", "up")


def add_bid1_route() -> None:
    ip("-6", "route", "add", "2001:db8:1::/64", "dev", "mr0", "table", "1001")


def prepare() -> None:
    subprocess.run(
        ["sysctl", "-qw", "net.ipv6.conf.all.keep_addr_on_down=1"], check=True, capture_output=True
    )
    add_veth()
    add_bid1_route()
    ip("-6", "route", "add", "blackhole", "2001:db8:2::/64", "table", "1002")


@dataclass
class Recorder:
    """Callback target: every reported set with the time it arrived."""

    seen: queue.Queue[tuple[float, frozenset[int]]] = field(default_factory=queue.Queue)
    history: list[frozenset[int]] = field(default_factory=list)

    def __call__(self, unusable: frozenset[int]) -> None:
        self.seen.put((time.perf_counter(), unusable))

    def wait_for(self, wanted: frozenset[int]) -> float:
        """Time of the first report equal to `wanted`; fail after DEADLINE."""
        end = time.monotonic() + DEADLINE
        while (left := end - time.monotonic()) > 0:
            try:
                at, unusable = self.seen.get(timeout=left)
            except queue.Empty:
                break
            self.history.append(unusable)
            if unusable == wanted:
                return at
        raise AssertionError(f"no report of {set(wanted)} within {DEADLINE} s: {self.history}")

    def quiet_for(self, seconds: float) -> list[frozenset[int]]:
        """Reports that arrive within `seconds` (expected: none)."""
        extra = []
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                extra.append(self.seen.get(timeout=left)[1])
            except queue.Empty:
                break
        return extra


@contextmanager
def watching() -> Iterator[tuple[LinkWatcher, Recorder]]:
    prepare()
    recorder = Recorder()
    watcher = LinkWatcher(CFG, recorder, name="test-linkwatch")
    watcher.start()
    try:
        yield watcher, recorder
    finally:
        watcher.stop()


def carrier_trials() -> dict[str, list[float]]:
    after_return: list[float] = []
    from_issue: list[float] = []
    back: list[float] = []
    with watching() as (watcher, rec):
        rec.wait_for(NONE)
        for _ in range(TRIALS):
            t0 = time.perf_counter()
            ip("link", "set", "mr0p", "down")
            t1 = time.perf_counter()
            at = rec.wait_for(BID1)
            after_return.append(at - t1)
            from_issue.append(at - t0)
            assert watcher.current() == BID1
            t2 = time.perf_counter()
            ip("link", "set", "mr0p", "up")
            back.append(rec.wait_for(NONE) - t2)
    return {"after_return": after_return, "from_issue": from_issue, "back": back}


def test_carrier_loss_is_reported_quickly(make_netns: Callable[[str], str]) -> None:
    result = netns.call_in(make_netns("lw"), carrier_trials)
    after_return = result["after_return"]
    median_ms = statistics.median(after_return) * 1000
    print(
        f"carrier loss -> callback: median {median_ms:.2f} ms after `ip` returned, "
        f"{statistics.median(result['from_issue']) * 1000:.2f} ms after it started; "
        f"carrier back -> usable {statistics.median(result['back']) * 1000:.2f} ms "
        f"({len(after_return)} trials; max {max(after_return) * 1000:.2f} ms)"
    )
    assert len(after_return) == TRIALS
    assert max(after_return) < 1.0
    assert max(result["back"]) < 1.0


def table_scenario() -> list[str]:
    steps = []
    with watching() as (watcher, rec):
        rec.wait_for(NONE)
        ip("-6", "route", "flush", "table", "1001")
        rec.wait_for(BID1)
        steps.append("bid1 table emptied")
        add_bid1_route()
        rec.wait_for(NONE)
        steps.append("bid1 route back")
        ip("-6", "route", "flush", "table", "1002")
        rec.wait_for(frozenset({2}))
        steps.append("bid2 (no device) table emptied")
        ip("-4", "route", "add", "blackhole", "192.0.2.0/24", "table", "1002")
        rec.wait_for(NONE)
        steps.append("an IPv4 route is a route too")
        assert watcher.current() == NONE
    return steps


def test_empty_table_makes_bid_unusable(make_netns: Callable[[str], str]) -> None:
    assert len(netns.call_in(make_netns("lw"), table_scenario)) == 4


def device_scenario() -> list[str]:
    steps = []
    with watching() as (watcher, rec):
        rec.wait_for(NONE)
        ip("link", "set", "mr0", "down")
        rec.wait_for(BID1)
        steps.append("admin down")
        ip("link", "set", "mr0", "up")
        # The admin down deleted the table's routes: still unusable until they are back.
        assert rec.quiet_for(0.3) == []
        assert watcher.current() == BID1
        add_bid1_route()
        rec.wait_for(NONE)
        steps.append("routes back after up")
        ip("link", "del", "mr0")
        rec.wait_for(BID1)
        assert watcher.alive
        steps.append("device removed")
        add_veth()
        add_bid1_route()
        rec.wait_for(NONE)
        steps.append("device recreated")
        ip("link", "add", "other0", "type", "veth", "peer", "name", "other1")
        ip("link", "set", "other0", "up")
        ip("link", "del", "other0")
        assert rec.quiet_for(0.3) == []
        steps.append("foreign devices ignored")
    return steps


def test_device_down_removed_and_back(make_netns: Callable[[str], str]) -> None:
    assert len(netns.call_in(make_netns("lw"), device_scenario)) == 5


def stop_scenario() -> tuple[float, bool, frozenset[int]]:
    prepare()
    rec = Recorder()
    ip("link", "set", "mr0p", "down")
    watcher = LinkWatcher(CFG, rec)
    watcher.start()
    initial = watcher.current()
    t0 = time.perf_counter()
    watcher.stop()
    took = time.perf_counter() - t0
    watcher.stop()  # a second stop is harmless
    return took, watcher.alive, initial


def test_initial_state_and_prompt_stop(make_netns: Callable[[str], str]) -> None:
    took, alive, initial = netns.call_in(make_netns("lw"), stop_scenario)
    assert initial == BID1
    assert not alive
    assert took < 1.0


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def overflow_scenario() -> tuple[list[frozenset[int]], list[str]]:
    """A slow callback while a burst of route events arrives overflows a tiny socket buffer."""
    prepare()
    warnings = Collect()
    logging.getLogger("services.prem.linkwatch").addHandler(warnings)
    rec = Recorder()
    release = queue.Queue[None]()

    def slow(unusable: frozenset[int]) -> None:
        rec(unusable)
        if unusable == BID1:
            release.get(timeout=DEADLINE)

    watcher = LinkWatcher(CFG, slow, rcvbuf=4096)
    watcher.start()
    try:
        rec.wait_for(NONE)
        ip("link", "set", "mr0p", "down")
        rec.wait_for(BID1)  # the watcher thread now blocks inside the callback
        batch = "".join(f"route add 2001:db8:99:{n:x}::/64 dev lo table 3\n" for n in range(400))
        subprocess.run(["ip", "-6", "-batch", "-"], input=batch, text=True, check=True)
        ip("link", "set", "mr0p", "up")
        release.put(None)
        rec.wait_for(NONE)
        assert watcher.alive
        ip("link", "set", "mr0p", "down")
        rec.wait_for(BID1)
        return rec.history, warnings.messages
    finally:
        release.put(None)
        watcher.stop()


def test_event_overflow_resyncs(make_netns: Callable[[str], str]) -> None:
    history, warnings = netns.call_in(make_netns("lw"), overflow_scenario)
    assert any("overflowed" in message for message in warnings)
    assert history == [NONE, BID1, NONE, BID1]
