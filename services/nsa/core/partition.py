"""Which replica decides for which mobile router: a static partition by a stable hash.

Decisions are per mobile router (hysteresis, per-node versions, one message in flight), so
two replicas must never decide for the same router at once. Every replica is configured with
the same router list and `replicas`, and its own index `replica`; router `r` belongs to
replica `sha256(r) mod replicas`. SHA-256 rather than Python's `hash`, which is salted per
process and would give each replica a different answer.

Each replica subscribes to its own routers' topics only (`routes`), so the broker sends it
only its share, and it still drops, in the MQTT thread, any input of a router it does not own
(a topic lookup, before any JSON is parsed).

This is the static share (`replicas`/`replica`). Replicas that fail over lease partitions on
etcd instead (`[nsa.coordination]`: `ownership`, `services.nsa.leases`).

Failover of the static share, honestly: there is none. When a replica dies, its routers are
not decided until it is restarted (the supervisor's job; compose restarts it). Their workers keep
enforcing the last policies meanwhile, and the restarted replica rebuilds from the retained
picture (link state, presence with each node's enforced version, preferences, rules), the
next metrics period and the binding events (see `engine`). Changing `replicas` moves routers
between replicas: restart all replicas together. If two replicas ever do decide for one router
(configured with different `replicas`), the workers stay consistent (each refuses a version
not above the one it enforces) but the two would fight, each resynchronising above the other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from services.nsa.core.settings import RouterEntry


def owner(mobile_router: str, replicas: int) -> int:
    """The index of the replica that decides for `mobile_router`, the same in every process."""
    if replicas < 1:
        raise ValueError(f"replicas must be at least 1, not {replicas}")
    digest = hashlib.sha256(mobile_router.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % replicas


def owned(routers: Iterable[RouterEntry], replicas: int, replica: int) -> tuple[RouterEntry, ...]:
    """The routers replica `replica` of `replicas` decides for, in configuration order."""
    return tuple(r for r in routers if owner(r.id, replicas) == replica)
