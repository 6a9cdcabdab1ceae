"""Which replica should hold which partition, and what one replica does about it: the pure
core of the NSA's leases (`services.nsa.leases` is the etcd shell around it).

The routers are split into a fixed number of partitions by a stable hash (`partition_of`);
partitions, not routers, are leased, so the coordination traffic does not grow with the fleet.
Which live replica should hold a partition is rendezvous (highest random weight) hashing over
the live members (`assignment`): every replica computes the same answer from the same member
list, and when a member joins or leaves only the partitions it wins or held move (about
1/n of them), not a reshuffle of all.

Each partition is held under a lease by at most one replica (etcd's create-if-absent). What
one replica does on each turn (`turn`), given the members, the holders and the ready marks:

- a partition nobody holds and that it should hold: take it now (its holder died, or the
  fleet starts): the routers are without a decider, so there is nothing to wait for;
- a partition another live replica holds and that it should hold (a replica came back):
  warm it first (subscribe, rebuild the routers' state from the bus without deciding), and
  when warm say so with a ready mark; the holder releases only then, and the warm replica
  takes it at once: the routers keep a decider but for one turn;
- a partition it holds that another live, ready replica should hold: release it;
- a partition it warms but should no longer hold: stop warming.

A partition whose holder's lease expired disappears from the holders (etcd deletes the key
with its lease), so a dead replica's partitions are taken within its lease's TTL and a turn.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from services.nsa.core.plan import MrLedgers
from services.nsa.core.settings import RouterEntry


def _weight(*parts: str) -> int:
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def partition_of(mobile_router: str, partitions: int) -> int:
    """The partition of a router, the same in every process (SHA-256, not the salted `hash`)."""
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, not {partitions}")
    return _weight(mobile_router) % partitions


def split(routers: Iterable[RouterEntry], partitions: int) -> dict[int, tuple[RouterEntry, ...]]:
    """Every partition's routers, in configuration order (empty partitions included)."""
    found: dict[int, list[RouterEntry]] = {p: [] for p in range(partitions)}
    for router in routers:
        found[partition_of(router.id, partitions)].append(router)
    return {p: tuple(rs) for p, rs in found.items()}


def assignment(partitions: int, members: Iterable[str]) -> dict[int, str]:
    """Which live member should hold each partition (rendezvous hashing); empty when none."""
    live = sorted(set(members))
    if not live:
        return {}
    return {p: max(live, key=lambda m: (_weight(str(p), m), m)) for p in range(partitions)}


@dataclass(frozen=True)
class Turn:
    """What one replica does on one turn (see the module docstring)."""

    take: tuple[int, ...] = ()
    release: tuple[int, ...] = ()
    warm: tuple[int, ...] = ()
    cool: tuple[int, ...] = ()
    mark_ready: tuple[int, ...] = ()


def turn(
    me: str,
    partitions: int,
    *,
    members: Iterable[str],
    holders: Mapping[int, str],
    ready: Mapping[int, str],
    warming: Mapping[int, bool],
) -> Turn:
    """One replica's moves given the live `members`, each held partition's holder, the ready
    marks (partition -> the replica warm for it) and what this replica warms (partition ->
    whether it is warm yet)."""
    live = set(members) | {me}
    should = assignment(partitions, live)
    take: list[int] = []
    release: list[int] = []
    warm: list[int] = []
    cool: list[int] = []
    mark: list[int] = []
    for p in range(partitions):
        holder = holders.get(p)
        wanted = should[p]
        if holder == me:
            successor = ready.get(p)
            if wanted != me and successor == wanted and wanted in live:
                release.append(p)
        elif wanted == me:
            if holder is None or holder not in live:
                if holder is None:
                    take.append(p)
                elif p not in warming:
                    warm.append(p)  # its holder's lease is still running out
            elif p not in warming:
                warm.append(p)
            elif warming[p] and ready.get(p) != me:
                mark.append(p)
        elif p in warming:
            cool.append(p)
    return Turn(tuple(take), tuple(release), tuple(warm), tuple(cool), tuple(mark))


def with_epoch(ledgers: MrLedgers, epoch: int) -> MrLedgers:
    """A router's ledgers sending under `epoch` from now on (the fencing token of the
    partition's ownership: `services.contracts.fencing`)."""
    mr = None if ledgers.mr is None else ledgers.mr.model_copy(update={"epoch": epoch})
    return ledgers.model_copy(
        update={"ha": ledgers.ha.model_copy(update={"epoch": epoch}), "mr": mr}
    )
