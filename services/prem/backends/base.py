"""The interface every enforcement back end implements."""

from __future__ import annotations

from typing import Protocol

from services.prem.core.flowtable import FlowTable
from services.prem.core.reconcile import Changes


class Backend(Protocol):
    """Renders a flow table into packet marking, and reads back what is enforced.

    `read` must go through an independent path (a kernel dump), not remember what was written,
    so that the reconciler sees the truth after a crash or a foreign change. `apply` is atomic:
    after it returns the kernel holds `desired`; if it raises `KernelError`, the kernel holds
    what it held before.
    """

    name: str
    #: The policy action kinds it enforces ("forward", "drop", "balance", "duplicate"); the
    #: enforcer refuses a document with any other before touching the kernel.
    actions: frozenset[str]

    def read(self) -> FlowTable:
        """The flow table the data plane enforces now (empty when nothing of ours exists)."""
        ...

    def apply(self, desired: FlowTable, changes: Changes) -> None:
        """Make the data plane enforce `desired`, given `changes` from the current state."""
        ...

    def apply_delta(self, changes: Changes) -> bool:
        """Apply `changes`, relative to what the data plane holds, in time proportional to
        them, when the back end can; False, with nothing changed, when it cannot (the caller
        then applies the whole desired table). For a caller that keeps its desired state in
        parts (an HA's routers, `services.prem.fleet`) and knows a change without the whole
        table."""
        ...

    def remove_all(self) -> None:
        """Remove everything this back end owns (chains, tables, sets)."""
        ...

    def uncopyable(self) -> dict[tuple[int, int], str]:
        """(address family 4 or 6, BID) -> why a duplicate policy cannot copy to that BID now
        (the enforcer leaves those copies out, reports them as fallbacks and says why in the
        status). A back end that cannot duplicate at all refuses duplicate policies instead
        (`actions`)."""
        ...
