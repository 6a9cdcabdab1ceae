"""An in-memory data plane for decision-side tests: it answers "which BID does this packet get?".

It holds every kind of rule (forward, drop, balance buckets, duplicate copies, priority tiers)
and reads back exactly what it holds. A priority rule sends every packet to its first tier: this
model meters nothing."""

from __future__ import annotations

from services.contracts.errors import KernelError
from services.prem.config import PremSettings
from services.prem.core.flowtable import FlowTable, Packet, classify
from services.prem.core.reconcile import Changes


class MemoryBackend:
    """Holds the flow table in memory and interprets it like the kernel would."""

    name = "memory"
    #: The policy actions this back end enforces (the enforcer refuses the others).
    actions = frozenset({"forward", "drop", "balance", "duplicate", "priority"})

    def __init__(
        self, settings: PremSettings | None = None, *, fail_next_apply: bool = False
    ) -> None:
        self.settings = settings
        self._table: FlowTable = ()
        self.applied_batches = 0
        self.fail_next_apply = fail_next_apply
        #: What `uncopyable` answers (tests set it to model BIDs without a copy route).
        self.no_copy: dict[tuple[int, int], str] = {}

    def read(self) -> FlowTable:
        """The table as held."""
        return self._table

    def apply(self, desired: FlowTable, changes: Changes) -> None:
        """Replace the table in one step (or fail whole when a fault is injected)."""
        if self.fail_next_apply:
            self.fail_next_apply = False
            raise KernelError("memory apply", "injected failure")
        removed = set(changes.remove)  # once, not once per rule held
        present = [r for r in self._table if r not in removed]
        self._table = tuple(sorted({*present, *changes.add}, key=lambda r: r.precedence()))
        if self._table != desired:
            raise KernelError("memory apply", "changes do not lead to the desired table")
        self.applied_batches += 1

    def apply_delta(self, changes: Changes) -> bool:
        """Apply `changes` to the table held; False when a rule to remove is not held."""
        if self.fail_next_apply:
            self.fail_next_apply = False
            raise KernelError("memory apply", "injected failure")
        removed = set(changes.remove)
        if not removed <= set(self._table):
            return False
        kept = [r for r in self._table if r not in removed]
        self._table = tuple(sorted({*kept, *changes.add}, key=lambda r: r.precedence()))
        self.applied_batches += 1
        return True

    def remove_all(self) -> None:
        """Forget every rule."""
        self._table = ()

    def uncopyable(self) -> dict[tuple[int, int], str]:
        """As set in `no_copy` (every BID can take a copy by default)."""
        return dict(self.no_copy)

    def bid_for(self, packet: Packet) -> int | str | None:
        """The BID `packet` is marked with, "drop", or None when no policy matches (a balance
        rule picks by the packet's flow hash)."""
        rule = classify(self._table, packet)
        if rule is None:
            return None
        bid = rule.bid_of(packet)
        return "drop" if bid is None else bid

    def paths_for(self, packet: Packet) -> tuple[int, ...]:
        """Every BID `packet` leaves by: its marked BID, then the BIDs of its copies (empty
        when it is dropped or matches nothing)."""
        rule = classify(self._table, packet)
        bid = None if rule is None else rule.bid_of(packet)
        if rule is None or bid is None:
            return ()
        return (bid, *rule.copies)
