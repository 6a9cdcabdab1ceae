"""Fencing tokens in policy versions: the epoch of the NSA replica's partition ownership in
the high bits of each document's version.

Workers already refuse a version not above the one they enforce. An NSA replica that holds a
partition under an etcd lease puts that ownership's revision (the epoch, strictly greater for
every new ownership, since etcd revisions only grow) in the high `EPOCH_SHIFT` bits of every
version it sends, and counts in the low bits. A replica that took the partition over starts
at `epoch << EPOCH_SHIFT`, above every version of an older epoch; a replica that lost its
lease but still runs keeps its own, older epoch in the high bits whatever it has seen, so
once a worker enforces a document of the newer epoch it refuses the older one as fenced
(`stale_epoch`), counted apart from a plain stale version.

Epoch 0 is the embedded default (one replica, no etcd): versions are then plain counters, as
before epochs existed, and a worker never fences them against one another.
"""

from __future__ import annotations

#: Bits of a version below the epoch: 2^32 documents per node and ownership.
EPOCH_SHIFT = 32
#: The low bits: the sequence within one epoch.
SEQUENCE_MASK = (1 << EPOCH_SHIFT) - 1
#: The highest epoch that keeps a version within the contract's 63 bits.
MAX_EPOCH = (1 << (63 - EPOCH_SHIFT)) - 1


def epoch_of(version: int) -> int:
    """The epoch a version was sent under (0: no fencing)."""
    return version >> EPOCH_SHIFT


def next_version(last_version: int, epoch: int) -> int:
    """The version after `last_version` (the highest sent or reported) for a sender of `epoch`.

    Always carries `epoch` in its high bits: a newer epoch starts at its first sequence number,
    the same epoch counts on, and an older sender that saw a newer epoch's version still
    sends under its own epoch, which the worker then refuses. Epoch 0 counts as before.
    """
    if not 0 <= epoch <= MAX_EPOCH:
        raise ValueError(f"epoch {epoch} is out of range 0..{MAX_EPOCH}")
    if epoch == 0:
        return last_version + 1
    seen = epoch_of(last_version)
    if seen < epoch:
        return (epoch << EPOCH_SHIFT) + 1
    return (epoch << EPOCH_SHIFT) | min(SEQUENCE_MASK, (last_version & SEQUENCE_MASK) + 1)


def stale_epoch(version: int, enforced: int) -> bool:
    """Whether a document of `version` comes from an older epoch than the one `enforced` was
    sent under: a replica that lost its partition (fenced)."""
    return epoch_of(version) < epoch_of(enforced)
