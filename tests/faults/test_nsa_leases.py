"""The leases' shell (`services.nsa.leases`) against a real etcd, turn by turn (no thread):
a lone replica takes every partition, each under an epoch of its own; a second one warms its
share, marks it ready, and only then does the first hand it over; a replica whose lease is
gone loses its partitions; one that could not renew for its TTL gives them up by itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labs.etcd import etcd_binary, running_etcd
from services.nsa.core.ownership import assignment
from services.nsa.core.settings import Coordination
from services.nsa.etcd import Etcd
from services.nsa.items import Gain, Item, Lose, Warm
from services.nsa.leases import Leases
from tests.conftest import _require

pytestmark = pytest.mark.broker  # real services (etcd), like the other fault tests
PARTITIONS = 6


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[str]:
    _require(etcd_binary() is not None, "needs etcd (Debian package etcd-server)")
    with running_etcd(tmp_path) as url:
        yield url


class Clock:
    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


def _leases(etcd: str, name: str, items: list[Item], clock: Clock) -> Leases:
    settings = Coordination(etcd=etcd, partitions=PARTITIONS, lease_ttl_s=1, warm_s=0.5)
    return Leases(settings, name, items.append, clock=clock)


def _gained(items: list[Item]) -> dict[int, int]:
    return {i.partition: i.epoch for i in items if isinstance(i, Gain)}


def test_take_hand_over_and_lose(etcd: str) -> None:
    clock = Clock()
    got_a: list[Item] = []
    got_b: list[Item] = []
    a = _leases(etcd, "a", got_a, clock)
    a.step()
    first = _gained(got_a)
    assert sorted(first) == list(range(PARTITIONS)), got_a
    assert len(set(first.values())) == PARTITIONS, "an epoch per partition"

    b = _leases(etcd, "b", got_b, clock)
    b.step()  # b registers; the next turn it sees itself among the members
    b.step()
    share = sorted(p for p, m in assignment(PARTITIONS, {"a", "b"}).items() if m == "b")
    assert share, "the test needs partitions for b"
    assert sorted(i.partition for i in got_b if isinstance(i, Warm)) == share
    a.step()
    assert not [i for i in got_a if isinstance(i, Lose)], "no handover before b is warm"

    clock.now += 0.6  # warm
    b.step()  # marks ready
    a.step()  # hands over
    assert sorted(i.partition for i in got_a if isinstance(i, Lose)) == share
    b.step()  # takes
    taken = _gained(got_b)
    assert sorted(taken) == share
    assert all(taken[p] > first[p] for p in share), "a newer epoch for each handover"
    assert sorted(a.held) == sorted(set(range(PARTITIONS)) - set(share))

    # b's lease is revoked behind its back: its next turn loses everything.
    client = Etcd(etcd)
    try:
        client.revoke(b.lease)
    finally:
        client.close()
    clock.now += 0.4  # a renewal is due
    b.step()
    assert sorted(i.partition for i in got_b if isinstance(i, Lose)) == share

    # a could not renew for its TTL (stopped, or etcd away): it gives up by itself.
    before, held = len(got_a), sorted(a.held)
    clock.now += 1.0
    a.step()  # fenced first, then a new lease and what it may take again
    lost = [i.partition for i in got_a[before:] if isinstance(i, Lose)]
    assert lost == held
    assert isinstance(got_a[before], Lose), "given up before anything else"
    a.close()
    b.close()


def test_a_replica_with_another_partition_count_takes_nothing(etcd: str) -> None:
    clock = Clock()
    got: list[Item] = []
    first = _leases(etcd, "a", got, clock)
    first.step()
    assert _gained(got)
    other: list[Item] = []
    settings = Coordination(etcd=etcd, partitions=PARTITIONS + 1, lease_ttl_s=1, warm_s=0.5)
    odd = Leases(settings, "b", other.append, clock=clock)
    first.close()  # every partition is free now: still, b takes none
    odd.step()
    odd.step()
    assert other == []
    odd.close()
