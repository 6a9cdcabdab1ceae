"""The nftables back end: one `inet` table, one verdict-map lookup per layer, marks per BID.

Packets enter through `prerouting` (forwarded) and `output` (local), both jump to one
classification chain that evaluates the layers in order (see `core.nft_layers`); a hit jumps to
the BID's chain, which sets our mark bits, or drops. Every change is one libnftables batch, so
the kernel either takes all of it or none of it; the batch's text is rendered and the listing
parsed by the pure core (`core.nft_render`, `core.nft_parse`).
"""

from __future__ import annotations

import logging

from services.prem.backends.libnftables import NftContext
from services.prem.config import PremSettings
from services.prem.core.flowtable import FlowRule, FlowTable
from services.prem.core.nft_layers import Layer, assign_layers, flatten
from services.prem.core.nft_parse import TableState, parse_table
from services.prem.core.nft_render import (
    bid_chain_command,
    element_commands,
    map_parts,
    table_commands,
    table_name,
)
from services.prem.core.reconcile import Changes

log = logging.getLogger(__name__)


class NftablesBackend:
    """Renders flow tables into the table `inet <prefix>_prem` and reads it back."""

    name = "nftables"

    def __init__(self, settings: PremSettings) -> None:
        self.settings = settings
        self.table = table_name(settings)
        self._ctx: NftContext | None = None
        #: The table as last read or written by this process; None forces a read.
        self._known: TableState | None = None
        #: What the last apply sent: "none", "elements" or "replace" (for tests and logs).
        self.last_apply = "none"

    def _nft(self) -> NftContext:
        """The context, created on first use in the process (and namespace) that uses it."""
        if self._ctx is None:
            self._ctx = NftContext()
        return self._ctx

    def _state(self) -> TableState:
        """Our table as the kernel lists it (empty when absent)."""
        tables = self._nft().run_json("list tables inet")
        present = any(
            "table" in obj and obj["table"]["name"] == self.table
            for obj in tables.get("nftables", [])
        )
        if not present:
            return TableState((), frozenset())
        listing = self._nft().run_json(f"list table inet {self.table}")
        return parse_table(listing, self.table, self.settings)

    def read(self) -> FlowTable:
        """The flow table enforced now, decoded from the kernel's listing."""
        self._known = self._state()
        return flatten(self._known.layers)

    def apply(self, desired: FlowTable, changes: Changes) -> None:
        """Enforce `desired` in one transaction: element updates when the layout allows it.

        The batch is computed from the layers of `desired` against the kernel's layers as last
        read or written by this object (read again when unknown), not from `changes`: the two
        agree when nothing else writes our table. If something did, an element batch can fail
        whole (deleting what is gone): the view is dropped, and the next read/apply recovers.
        """
        del changes
        current = self._known if self._known is not None else self._state()
        wanted = assign_layers(desired)
        commands = _element_batch(self.table, current, wanted, self.settings)
        mode = "elements"
        if commands is None:
            commands = table_commands(wanted, self.settings)
            mode = "replace"
        self._known = None
        self.last_apply = mode if commands else "none"
        if commands:
            self._nft().run("\n".join(commands) + "\n")
        self._known = TableState(wanted, _bids(wanted) | _kept_bids(current, mode))
        log.debug("nftables apply: %s, %d commands", mode, len(commands))

    def remove_all(self) -> None:
        """Delete our table; an absent table is success."""
        self._known = None
        self._nft().run(f"add table inet {self.table}\ndelete table inet {self.table}\n")
        self._known = TableState((), frozenset())


def _bids(layers: tuple[Layer, ...]) -> frozenset[int]:
    return frozenset(r.bid for layer in layers for r in layer.rules if r.bid is not None)


def _kept_bids(current: TableState, mode: str) -> frozenset[int]:
    """BID chains an element update leaves in place (a replace removes unused ones)."""
    return current.bid_chains if mode == "elements" else frozenset()


def _element_batch(
    table: str, current: TableState, wanted: tuple[Layer, ...], settings: PremSettings
) -> list[str] | None:
    """Element adds/deletes turning `current` into `wanted`, or None if the layout differs.

    The layout agrees when the layers match one to one (family, shape, DSCP guards, and the
    rules of plain layers) and every unchanged rule sits in the same layer on both sides. An
    absent table never agrees, so the first apply creates it. Rules are matched by
    (policy id, family), unique in a flow table, so each is hashed and compared once.
    """
    if not current.layers and not current.bid_chains:
        return None
    old, new = current.layers, wanted
    if [layer.descriptor() for layer in old] != [layer.descriptor() for layer in new]:
        return None
    old_at = {(r.policy_id, r.family): (i, r) for i, layer in enumerate(old) for r in layer.rules}
    gone: list[list[FlowRule]] = [[] for _ in new]
    came: list[list[FlowRule]] = [[] for _ in new]
    for index, layer in enumerate(new):
        for rule in layer.rules:
            found = old_at.pop((rule.policy_id, rule.family), None)
            if found is None:
                came[index].append(rule)
            elif found[1] is rule or found[1] == rule:
                if found[0] != index:
                    return None
            else:
                gone[found[0]].append(found[1])
                came[index].append(rule)
    for index, rule in old_at.values():
        gone[index].append(rule)
    commands = [
        bid_chain_command(table, bid, settings) for bid in sorted(_bids(new) - current.bid_chains)
    ]
    adds: list[str] = []
    for index, layer in enumerate(new):
        for part in map_parts(index, layer, gone[index]):
            commands += element_commands(table, part.name, part.key, part.rules, "delete")
        for part in map_parts(index, layer, came[index]):
            adds += element_commands(table, part.name, part.key, part.rules, "add")
    return commands + adds
