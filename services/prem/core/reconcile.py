"""The reconciler: a pure diff between the flow table wanted and the one read from the kernel."""

from __future__ import annotations

from dataclasses import dataclass

from services.prem.core.flowtable import FlowRule, FlowTable


@dataclass(frozen=True)
class Changes:
    """Rules to remove and to add so that the kernel holds the desired flow table."""

    remove: tuple[FlowRule, ...] = ()
    add: tuple[FlowRule, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.remove or self.add)


def plan(desired: FlowTable, actual: FlowTable) -> Changes:
    """Removals first (as faucet orders deletes before adds), duplicates dropped.

    A rule whose verdict changed appears in both lists; equal tables give no changes, so
    applying the same state twice touches nothing.
    """
    wanted = set(desired)
    present = set(actual)
    return Changes(
        remove=tuple(sorted(present - wanted, key=FlowRule.precedence)),
        add=tuple(sorted(wanted - present, key=FlowRule.precedence)),
    )
