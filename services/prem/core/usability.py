"""Which BIDs are unusable, from the state of their devices and routing tables.

The PREM worker's local fast fallback rests on this decision: when a BID's egress device loses
carrier, is set down or disappears, or when the mobility layer empties the BID's routing table,
its flows move before the NSA has even heard of it. `linkwatch.LinkWatcher` (the shell) keeps
the inputs up to date from netlink events.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.prem.core.settings import NodeSettings


@dataclass(frozen=True)
class LinkInfo:
    """The state of one network device that matters for BID usability."""

    admin_up: bool
    carrier: bool

    @property
    def usable(self) -> bool:
        """Traffic can leave by this device."""
        return self.admin_up and self.carrier


def unusable_bids(
    settings: NodeSettings, links: Mapping[str, LinkInfo], tables_with_routes: set[int]
) -> frozenset[int]:
    """BIDs whose table is empty, or whose configured device is missing, down or without carrier.

    A BID without a configured interface is judged by its routing table alone.
    """
    unusable: set[int] = set()
    for entry in settings.bids:
        if settings.table_of(entry.bid) not in tables_with_routes:
            unusable.add(entry.bid)
            continue
        if entry.interface is None:
            continue
        link = links.get(entry.interface)
        if link is None or not link.usable:
            unusable.add(entry.bid)
    return frozenset(unusable)
