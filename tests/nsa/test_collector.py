"""The NSA's garbage collector schedule: short passes over young objects, and a periodic
full pass so that a reference cycle that outlived a short period is still freed."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from services.nsa.service import Collector


class Node:
    """An object that can sit in a reference cycle."""

    other: Node | None = None


@pytest.fixture
def collector() -> Iterator[Collector]:
    """A collector as the service runs it; the test process's collector restored after."""
    made = Collector(period_s=0.1, full_period_s=60.0)
    made.start()
    try:
        yield made
    finally:
        gc.unfreeze()
        gc.enable()


def _cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_a_cycle_dropped_within_a_period_is_freed_by_the_next_short_pass(
    collector: Collector,
) -> None:
    collector.step(0.0)
    gone = _cycle()  # made and dropped between two passes
    collector.step(0.2)
    assert gone() is None


def test_a_cycle_that_outlived_a_period_is_freed_by_the_full_pass(collector: Collector) -> None:
    collector.step(0.0)
    a, b = Node(), Node()
    a.other, b.other = b, a
    kept = weakref.ref(a)
    collector.step(0.2)  # survives: frozen
    del a, b  # now garbage, but frozen objects are not traversed by short passes
    collector.step(0.4)
    assert kept() is not None, "short passes skip frozen objects (the point of freezing)"
    collector.step(60.5)
    assert kept() is None, "the full pass must free it"
    assert gc.get_freeze_count() > 0, "survivors frozen again after the full pass"
