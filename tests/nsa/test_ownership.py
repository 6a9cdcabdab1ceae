"""Which replica holds which partition: every replica computes the same assignment, a
change of members moves only the partitions it must, a dead holder's partitions are taken at
once, a returning replica warms before the holder hands over (no gap), and the ledgers of a
taken partition send under its epoch."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.contracts.fencing import EPOCH_SHIFT, epoch_of
from services.contracts.policy import Install
from services.nsa.core.ownership import (
    Turn,
    assignment,
    partition_of,
    split,
    turn,
    with_epoch,
)
from services.nsa.core.plan import new_ledgers
from services.nsa.core.settings import NsaServiceSettings, RouterEntry
from tests.nsa.enginebed import nsa_settings

P = 16
names = st.sets(st.sampled_from([f"nsa-{i}" for i in range(6)]), min_size=1)


def test_partitions_are_stable_and_cover_every_router() -> None:
    routers = [RouterEntry(id=f"mr{i}", ha_node=f"ha{i}", mr_node=f"mrn{i}") for i in range(50)]
    parts = split(routers, P)
    assert sorted(r.id for rs in parts.values() for r in rs) == sorted(r.id for r in routers)
    assert all(partition_of(r.id, P) == p for p, rs in parts.items() for r in rs)
    assert partition_of("mr1", P) == partition_of("mr1", P)


@given(names)
def test_every_partition_has_one_live_owner(members: set[str]) -> None:
    owners = assignment(P, members)
    assert set(owners) == set(range(P))
    assert set(owners.values()) <= members
    assert owners == assignment(P, sorted(members, reverse=True))


@given(names, st.sampled_from([f"nsa-{i}" for i in range(6)]))
def test_a_member_leaving_moves_only_its_partitions(members: set[str], gone: str) -> None:
    if gone not in members or len(members) == 1:
        return
    before = assignment(P, members)
    after = assignment(P, members - {gone})
    moved = {p for p in range(P) if before[p] != after[p]}
    assert moved == {p for p in range(P) if before[p] == gone}


def _owners(members: set[str]) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for p, m in assignment(P, members).items():
        found.setdefault(m, []).append(p)
    return found


def test_a_dead_holders_partitions_are_taken_at_once() -> None:
    owners = _owners({"a", "b"})
    holders = {p: m for m, ps in owners.items() for p in ps}
    # b died: its member key and its partitions' keys expired with its leases.
    left = {p: m for p, m in holders.items() if m == "a"}
    moves = turn("a", P, members={"a"}, holders=left, ready={}, warming={})
    assert sorted(moves.take) == sorted(owners["b"])
    assert moves.release == moves.warm == ()


def test_a_returning_replica_warms_then_the_holder_hands_over() -> None:
    owners = _owners({"a", "b"})
    holders = dict.fromkeys(range(P), "a")  # a held everything while b was away
    mine = sorted(owners["b"])
    # b is back: it warms its partitions first; a keeps them meanwhile.
    first = turn("b", P, members={"a", "b"}, holders=holders, ready={}, warming={})
    assert sorted(first.warm) == mine
    assert first.take == ()
    assert turn("a", P, members={"a", "b"}, holders=holders, ready={}, warming={}).release == ()
    # Not warm yet: nothing more; warm: it marks itself ready.
    cold = dict.fromkeys(mine, False)
    assert turn("b", P, members={"a", "b"}, holders=holders, ready={}, warming=cold) == Turn()
    warm = dict.fromkeys(mine, True)
    marked = turn("b", P, members={"a", "b"}, holders=holders, ready={}, warming=warm)
    assert sorted(marked.mark_ready) == mine
    ready = dict.fromkeys(mine, "b")
    handed = turn("a", P, members={"a", "b"}, holders=holders, ready=ready, warming={})
    assert sorted(handed.release) == mine
    # Released: b takes them at once.
    rest = {p: "a" for p in range(P) if p not in mine}
    taken = turn("b", P, members={"a", "b"}, holders=rest, ready=ready, warming=warm)
    assert sorted(taken.take) == mine


def test_a_warmed_partition_another_replica_should_hold_is_cooled() -> None:
    owners = _owners({"a", "b", "c"})
    holders = dict.fromkeys(range(P), "a")
    theirs = owners["c"][0]
    # b warmed `theirs` while c was away; c is back and should hold it.
    moves = turn("b", P, members={"a", "b", "c"}, holders=holders, ready={}, warming={theirs: True})
    assert theirs in moves.cool


def test_the_ledgers_of_a_taken_partition_send_under_its_epoch() -> None:
    ledgers = with_epoch(new_ledgers("mr1", ha_node="ha1", mr_node="mrn1"), 42)
    _, message = ledgers.ha.next_message(())
    assert message is not None
    assert isinstance(message.operation, Install)
    assert epoch_of(message.version) == 42
    assert message.version == (42 << EPOCH_SHIFT) + 1
    assert ledgers.mr is not None
    assert ledgers.mr.epoch == 42


def test_coordination_settings_refuse_a_static_share_too_and_name_the_field() -> None:
    base = nsa_settings().model_dump(exclude_unset=True)
    good = {"etcd": "http://127.0.0.1:2379"}
    settings = NsaServiceSettings.model_validate({**base, "coordination": good})
    assert settings.coordination is not None
    assert settings.coordination.partitions == 16
    with pytest.raises(ValidationError, match="not both"):
        NsaServiceSettings.model_validate(
            {**base, "coordination": good, "replicas": 2, "replica": 1}
        )
    with pytest.raises(ValidationError) as info:
        NsaServiceSettings.model_validate({**base, "coordination": {"etcd": "127.0.0.1:2379"}})
    assert info.value.errors()[0]["loc"] == ("coordination", "etcd")
