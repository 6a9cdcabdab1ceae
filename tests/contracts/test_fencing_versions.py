"""Versions under epochs: a newer epoch starts above every version of an older one, an epoch
counts on within itself, an older sender stays under its own epoch whatever it saw, and
epoch 0 (no leases) counts exactly as before."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.contracts.fencing import (
    EPOCH_SHIFT,
    MAX_EPOCH,
    epoch_of,
    next_version,
    stale_epoch,
)

epochs = st.integers(min_value=1, max_value=MAX_EPOCH)
sequences = st.integers(min_value=0, max_value=(1 << EPOCH_SHIFT) - 2)


def test_epoch_zero_counts_as_before() -> None:
    assert [next_version(v, 0) for v in (0, 1, 41)] == [1, 2, 42]


@given(epochs, epochs, sequences)
def test_every_version_carries_its_senders_epoch(mine: int, seen: int, sequence: int) -> None:
    version = next_version((seen << EPOCH_SHIFT) | sequence, mine)
    assert epoch_of(version) == mine
    assert version <= 2**63 - 1


@given(epochs, epochs, sequences)
def test_a_newer_epoch_is_above_and_an_older_is_fenced(a: int, b: int, sequence: int) -> None:
    old, new = sorted((a, b))
    last_old = (old << EPOCH_SHIFT) | sequence
    first_new = next_version(last_old, new)
    if new > old:
        assert first_new > last_old
        assert stale_epoch(next_version(first_new, old), first_new)
    else:
        assert first_new == last_old + 1
        assert not stale_epoch(first_new, last_old)


def test_an_epoch_beyond_the_versions_bits_is_refused() -> None:
    with pytest.raises(ValueError, match="out of range"):
        next_version(1, MAX_EPOCH + 1)
