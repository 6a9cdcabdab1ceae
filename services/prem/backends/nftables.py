"""The nftables back end: one `inet` table, one verdict-map lookup per layer, marks per BID.

Packets enter through `prerouting` (forwarded) and `output` (local), both jump to one
classification chain that evaluates the layers in order (see `core.nft_layers`); a hit jumps to
the BID's chain, which sets our mark bits, or drops. Every change is one libnftables batch, so
the kernel either takes all of it or none of it; the batch's text is rendered and the listing
parsed by the pure core (`core.nft_render`, `core.nft_parse`).

Balance rules go to a chain per bucket layout: `jhash` of the 5-tuple `mod N` into a verdict
map from bucket to BID chain. Duplicate rules mark for the original's BID like a forward; the
copies are made in two more tables, `ip6 <prefix>_dup` and `ip <prefix>_dup` (nft has no `dup`
in an inet table): `dup to <gateway> device <device>`, learnt from each BID's routing table
(`routing.copy_targets`), in the same batch. A BID whose table gives no target cannot take a
copy (`uncopyable`): the enforcer leaves that copy out and reports it.

Priority rules go to a chain per policy (`nft_render.priority_chain_commands`): conntrack
marks pin each flow to a tier, a meter per tier and a set of saturated tiers send new flows
to the next tier while the class is over a tier's rate.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from services import capabilities
from services.contracts.errors import KernelError
from services.prem import collector, routing
from services.prem.backends.libnftables import NftContext
from services.prem.config import PremSettings
from services.prem.core.flowtable import FlowRule, FlowTable
from services.prem.core.nft_layers import Layer, assign_layers, flatten, masks_of, shape_of
from services.prem.core.nft_parse import DupState, TableState, parse_dup_table, parse_table
from services.prem.core.nft_render import (
    DUP_FAMILIES,
    balance_chain_commands,
    balance_chains,
    bid_chain_command,
    chain_bids,
    delete_spread_chain_commands,
    dup_table_commands,
    dup_table_name,
    element_commands,
    key_text,
    layer_bids,
    map_name,
    map_parts,
    marked_bids,
    priority_chain_commands,
    priority_chains,
    set_name,
    spread_chain_names,
    table_commands,
    table_name,
    table_sets,
)
from services.prem.core.reconcile import Changes

log = logging.getLogger(__name__)


class NftablesBackend:
    """Renders flow tables into the table `inet <prefix>_prem` and reads it back."""

    name = "nftables"
    #: The policy actions this back end enforces (the enforcer refuses the others).
    actions = frozenset({"forward", "drop", "balance", "duplicate", "priority"})

    def __init__(self, settings: PremSettings) -> None:
        self.settings = settings
        self.table = table_name(settings)
        self._ctx: NftContext | None = None
        #: The table as last read or written by this process; None forces a read.
        self._known: TableState | None = None
        #: Our table is absent (as last read or written): a replace then creates it without
        #: the add-and-delete that clears an old one (half a millisecond of kernel time).
        self._absent = False
        #: The table's rules by key while it is a point table (`_PointIndex`), else None.
        self._index: _PointIndex | None = None
        #: What the last apply sent: "none", "delta", "elements" or "replace" (for tests and
        #: logs).
        self.last_apply = "none"
        self.dup_table = dup_table_name(settings)
        #: Whether our dup tables exist, as last read or written (None: unknown).
        self._dup_present: bool | None = None
        #: Why each (family, BID) cannot take a copy, from the last look at the routes.
        self.copy_problems: dict[tuple[int, int], str] = {}

    def _nft(self) -> NftContext:
        """The context, created on first use in the process (and namespace) that uses it."""
        if self._ctx is None:
            self._ctx = NftContext()
        return self._ctx

    def _tables(self) -> set[tuple[str, str]]:
        """(family, name) of every table that has a chain (all of ours have several).

        Listed through the chains: nft 1.0.6 answers `list tables` from a full cache, set
        elements included, which took 1 s with 30,000 elements in our map (20 ms for the
        chains; measured with the nft binary). An empty table of our name is taken as absent:
        creating ours over it is the same batch."""
        listed = self._nft().run_json("list chains")
        return {
            (obj["chain"]["family"], obj["chain"]["table"])
            for obj in listed.get("nftables", [])
            if "chain" in obj
        }

    def _state(self) -> TableState:
        """Our tables as the kernel lists them (empty when absent), copies merged in."""
        present = self._tables()
        self._dup_present = any((kind, self.dup_table) in present for kind in ("ip6", "ip"))
        self._absent = ("inet", self.table) not in present
        if self._absent:
            return TableState((), frozenset())
        listing = self._nft().run_json(f"list table inet {self.table}")
        state = parse_table(listing, self.table, self.settings)
        dups: dict[int, DupState] = {}
        for family, kind in DUP_FAMILIES.items():
            if (kind, self.dup_table) in present:
                dup_listing = self._nft().run_json(f"list table {kind} {self.dup_table}")
                dups[family] = parse_dup_table(dup_listing, self.dup_table)
        if not dups:
            return state
        paths = routing.copy_targets(self.settings)
        return dataclasses.replace(state, layers=_with_copies(state.layers, dups, paths))

    def read(self) -> FlowTable:
        """The flow table enforced now, decoded from the kernel's listing.

        A copy reads back as its BID only while its chain still sends where the BID's routes
        say (else as BID 0, `_with_copies`): after a route change the read differs from the
        desired table, and the next apply rewrites it.
        """
        self._index = None
        with collector.paused():
            self._known = self._state()
            return flatten(self._known.layers)

    def uncopyable(self) -> dict[tuple[int, int], str]:
        """(family, BID) -> why a duplicate cannot copy to that BID now, from the BID tables
        (`routing.copy_targets`); logged when it changes."""
        problems = routing.copy_targets(self.settings).reasons
        if problems != self.copy_problems:
            for (family, bid), reason in sorted(problems.items()):
                log.info(
                    "node %s: no IPv%d copies to BID %d: %s",
                    self.settings.node,
                    family,
                    bid,
                    reason,
                )
        self.copy_problems = problems
        return dict(problems)

    def apply(self, desired: FlowTable, changes: Changes) -> None:
        """Enforce `desired` in one transaction: element updates when the layout allows it.

        When the table is one exact map per family of distinct single points (the large
        table of host flows, as an HA serving many mobile routers holds) and `changes` keeps
        it so, the batch deletes and adds the changed rules' elements only, found by their
        keys (`_PointIndex`): work in proportion to the change, not to the table. Otherwise
        the batch is computed from the layers of `desired` against the kernel's layers as last
        read or written by this object (read again when unknown). Both trust that nothing
        else writes our table; if something did, an element batch can fail whole (deleting
        what is gone): the view is dropped, and the next read/apply recovers.
        """
        with collector.paused():
            index = self._point_index()
            fits = index is not None and len(desired) == index.size + len(changes.add) - len(
                changes.remove
            )
            if not (fits and self._apply_delta(changes)):
                self._apply(desired)

    def apply_delta(self, changes: Changes) -> bool:
        """Apply `changes` to the table as last read or written, as one element batch, when
        the point index allows it (`apply`); False, with nothing sent, when it does not: the
        caller then applies the whole desired table. For a caller that keeps its desired
        state in parts (one per mobile router) and so knows a change without the whole table;
        it answers for `changes` being relative to what the kernel holds."""
        with collector.paused():
            return self._apply_delta(changes)

    def apply_layered(self, desired: FlowTable) -> None:
        """`apply` without the point index: the layers of the whole table against the known
        ones (what every apply did before the index; kept for `bench.ha_fleet`, which
        measures both side by side)."""
        with collector.paused():
            self._apply(desired)

    def _point_index(self) -> _PointIndex | None:
        """The point index of the table as last read or written (built once from it)."""
        if self._index is None and self._known is not None:
            self._index = _PointIndex.of(self._known)
        return self._index

    def _apply_delta(self, changes: Changes) -> bool:
        """The element batch of `changes` on a point table, run; False when not applicable
        or when the kernel refused it (a refused batch changed nothing: the caller's full
        path then reads the table again and rewrites it, as after a foreign change)."""
        if self._dup_present is not False or any(r.copies for r in changes.add):
            return False
        index = self._point_index()
        if index is None:
            return False
        plan = index.plan(changes)
        if plan is None:
            return False
        commands = [
            bid_chain_command(self.table, bid, self.settings)
            for bid in sorted(plan.bids - index.bid_chains)
        ]
        for name, shape, verb, rules, keys, verdicts, masked in plan.parts:
            commands += element_commands(
                self.table, name, shape, rules, verb, keys=keys, verdicts=verdicts, masked=masked
            )
        self._known = None
        self._index = None
        self.last_apply = "delta" if commands else "none"
        if commands:
            try:
                self._nft().run("\n".join(commands) + "\n")
            except KernelError as exc:
                log.warning("nftables delta refused, the table is read and rewritten: %s", exc)
                self.last_apply = "none"
                return False
        index.commit(plan)
        self._index = index
        log.debug("nftables apply: delta, %d commands", len(commands))
        return True

    def _current(self) -> TableState:
        """The table as last read or written: kept, rebuilt from the point index, or read."""
        if self._known is None and self._index is not None:
            self._known = self._index.state()
        return self._known if self._known is not None else self._state()

    def _apply(self, desired: FlowTable) -> None:
        current = self._current()
        self._index = None
        wanted = assign_layers(desired, key_text)
        commands = _element_batch(self.table, current, wanted, self.settings)
        mode = "elements"
        if commands is None:
            commands = table_commands(wanted, self.settings, clear=not self._absent)
            mode = "replace"
        copying = any(rule.copies for rule in desired)
        # The dup tables are small and rewritten whole, unless the read found them right
        # (copies, targets and exempt devices: `_with_copies`) and nothing else changes.
        settled = not commands and flatten(current.layers) == desired
        if (copying or self._dup_present is not False) and not settled:
            paths = routing.copy_targets(self.settings) if copying else None
            commands += (
                dup_table_commands(self.settings, desired, paths.targets, paths.devices)
                if paths is not None
                else dup_table_commands(self.settings, desired, {})
            )
        self._known = None
        self.last_apply = mode if commands else "none"
        if commands:
            try:
                self._nft().run("\n".join(commands) + "\n")
            except KernelError as exc:
                raise _explained(exc, desired) from exc
        self._dup_present = copying
        self._absent = False
        self._known = TableState(
            wanted,
            frozenset(chain_bids(wanted, self.settings)) | _kept_bids(current, mode),
            spread_chain_names(wanted),
            current.sets if mode == "elements" else table_sets(wanted, self.settings),
        )
        self._index = _PointIndex.of(self._known)
        log.debug("nftables apply: %s, %d commands", mode, len(commands))

    def remove_all(self) -> None:
        """Delete our table; an absent table is success."""
        self._known = None
        self._index = None
        commands = [f"add table inet {self.table}", f"delete table inet {self.table}"]
        for kind in DUP_FAMILIES.values():
            commands += [
                f"add table {kind} {self.dup_table}",
                f"delete table {kind} {self.dup_table}",
            ]
        self._nft().run("\n".join(commands) + "\n")
        self._dup_present = False
        self._absent = True
        self._known = TableState((), frozenset())


_Part = tuple[str, tuple[str, ...], str, list[FlowRule], list[str], bool, bool]


@dataclass(frozen=True)
class _DeltaPlan:
    """An element batch on a point table: (map or set, shape, verb, rules, keys, whether the
    elements carry verdicts, whether the layer is masked) per part, the BIDs the added rules
    mark for, and the index entries it removes and adds."""

    parts: list[_Part]
    bids: frozenset[int]
    gone: list[tuple[int, str]]
    came: list[tuple[int, str, FlowRule]]


class _PointIndex:
    """A table of one exact map per family, of distinct single points (`nft_layers`'s
    shortcut), indexed by family and key text: where each rule's element is, so that a change
    of a few rules is an element batch found in time proportional to the change.

    Built once from the layers (O(table)), then kept up to date by each delta."""

    def __init__(
        self,
        layers: dict[int, tuple[int, Layer]],
        rules: dict[int, dict[str, FlowRule]],
        state: TableState,
    ) -> None:
        self.layers = layers
        self.rules = rules
        #: Per family, whether its layer is `in_sets` (else a verdict map), and the sets there.
        self.in_sets = {family: layer.in_sets for family, (_, layer) in layers.items()}
        self.sets = state.sets
        self.bid_chains = set(state.bid_chains)
        self.balance_chains = state.balance_chains
        self.size = sum(len(by_key) for by_key in rules.values())

    @classmethod
    def of(cls, state: TableState) -> _PointIndex | None:
        """The index of `state`, or None when it is not a point table (or has balance
        chains: a delta does not remove those the change leaves unused)."""
        if state.balance_chains:
            return None
        layers: dict[int, tuple[int, Layer]] = {}
        rules: dict[int, dict[str, FlowRule]] = {}
        for position, layer in enumerate(state.layers):
            if layer.family in layers or not layer.is_map or not layer.exact:
                return None
            if layer.dscp_values():
                return None
            keys = layer.keys or [key_text(r.selector, layer.shape) for r in layer.rules]
            by_key = dict(zip(keys, layer.rules, strict=True))
            if len(by_key) != len(layer.rules):
                return None
            layers[layer.family] = (position, layer)
            rules[layer.family] = by_key
        return cls(layers, rules, state)

    def plan(self, changes: Changes) -> _DeltaPlan | None:
        """The batch for `changes`, or None when it would not leave a point table (a rule of
        another shape or family, a range, a key taken, a balance) or does not match it."""
        gone_by: dict[int, list[tuple[str, FlowRule]]] = {}
        for rule in changes.remove:
            entry = self.layers.get(rule.family)
            if entry is None:
                return None
            key = key_text(rule.selector, entry[1].shape)
            if self.rules[rule.family].get(key) != rule:
                return None
            gone_by.setdefault(rule.family, []).append((key, rule))
        freed = {(family, key) for family, pairs in gone_by.items() for key, _ in pairs}
        came_by: dict[int, list[tuple[str, FlowRule]]] = {}
        taken: set[tuple[int, str]] = set()
        for rule in changes.add:
            point = self._point_of(rule)
            if point is None or (rule.family, point) in taken:
                return None
            if point in self.rules[rule.family] and (rule.family, point) not in freed:
                return None
            taken.add((rule.family, point))
            came_by.setdefault(rule.family, []).append((point, rule))
        return _DeltaPlan(
            self._parts(gone_by, came_by),
            frozenset(_rule_bids(changes.add)),
            [(f, key) for f, pairs in gone_by.items() for key, _ in pairs],
            [(f, key, rule) for f, pairs in came_by.items() for key, rule in pairs],
        )

    def _point_of(self, rule: FlowRule) -> str | None:
        """The key of a rule to add when it is a point of its family's layer (its shape, its
        prefix lengths, a set for its verdict); None when it is not."""
        entry = self.layers.get(rule.family)
        if (
            entry is None
            or rule.buckets
            or shape_of(rule.selector) != entry[1].shape
            or not self._has_set(rule)
        ):
            return None
        layer = entry[1]
        key = key_text(rule.selector, layer.shape)
        if "-" in key:
            return None
        if ("/" in key or layer.masks) and masks_of(rule.selector, layer.shape) != layer.masks:
            return None
        return key

    def _has_set(self, rule: FlowRule) -> bool:
        """Whether the rule's verdict can be added without a new set (the full path adds
        one; a verdict map takes any verdict)."""
        if not self.in_sets[rule.family]:
            return True
        position, layer = self.layers[rule.family]
        return not rule.tiers and set_name(position, layer, rule.bid) in self.sets

    def _parts(
        self,
        gone_by: dict[int, list[tuple[str, FlowRule]]],
        came_by: dict[int, list[tuple[str, FlowRule]]],
    ) -> list[_Part]:
        """The element commands' parts: per family's map, or per verdict's set."""
        parts: list[_Part] = []
        for verb, by_family in (("delete", gone_by), ("add", came_by)):
            for family, pairs in sorted(by_family.items()):
                position, layer = self.layers[family]
                masked = bool(layer.masks)
                if not self.in_sets[family]:
                    keys = [key for key, _ in pairs]
                    rules = [rule for _, rule in pairs]
                    name = map_name(position, layer)
                    parts.append((name, layer.shape, verb, rules, keys, True, masked))
                    continue
                by_set: dict[str, tuple[list[FlowRule], list[str]]] = {}
                for key, rule in pairs:
                    name = set_name(position, layer, rule.bid)
                    members = by_set.setdefault(name, ([], []))
                    members[0].append(rule)
                    members[1].append(key)
                for name, (rules, keys) in sorted(by_set.items()):
                    parts.append((name, layer.shape, verb, rules, keys, False, masked))
        return parts

    def commit(self, plan: _DeltaPlan) -> None:
        """The kernel took `plan`: keep the index equal to it."""
        for family, key in plan.gone:
            del self.rules[family][key]
        for family, key, rule in plan.came:
            self.rules[family][key] = rule
        self.bid_chains |= plan.bids
        self.size += len(plan.came) - len(plan.gone)

    def state(self) -> TableState:
        """The table as layers again (O(table): only when a change needs the full path)."""
        layers: list[Layer] = [Layer(0, (), ())] * len(self.layers)
        for family, (position, layer) in self.layers.items():
            by_key = self.rules[family]
            ordered = sorted(by_key.items(), key=lambda item: item[1].precedence())
            layers[position] = dataclasses.replace(
                layer,
                rules=tuple(rule for _, rule in ordered),
                keys=tuple(key for key, _ in ordered),
            )
        return TableState(tuple(layers), frozenset(self.bid_chains), self.balance_chains, self.sets)


#: The BID a stale copy reads as (no BID has it: BIDs start at 1).
STALE_COPY = 0

#: What each version-2 action needs from the kernel, by the capability probe's names.
_NEEDS = {
    "balance": ("nft jhash",),
    "duplicate": ("nft dup", "nft dup ip"),
    "priority": ("nft overflow",),
}


def _explained(error: KernelError, desired: FlowTable) -> KernelError:
    """The kernel refused a batch: when it holds balance, duplicate or priority rules, say
    which kernel feature is missing (a refused batch changed nothing)."""
    wanted = set()
    if any(rule.buckets for rule in desired):
        wanted |= set(_NEEDS["balance"])
    if any(rule.tiers for rule in desired):
        wanted |= set(_NEEDS["priority"])
    if any(rule.copies for rule in desired):
        families = {rule.family for rule in desired if rule.copies}
        wanted |= {"nft dup"} if 6 in families else set()
        wanted |= {"nft dup ip"} if 4 in families else set()
    if not wanted:
        return error
    try:
        found = capabilities.probe(tuple(sorted(wanted)))
    except (OSError, KernelError):
        return error
    missing = [found.check(name) for name in sorted(wanted) if not found.has(name)]
    if not missing:
        return error
    texts = "; ".join(check.missing_text for check in missing)
    return capabilities.MissingCapability(
        "nftables apply",
        f"{texts}; the nftables back end cannot enforce balance, duplicate or priority "
        "policies here "
        f"(kernel: {error})",
    )


def _with_copies(
    layers: tuple[Layer, ...], dups: Mapping[int, DupState], paths: routing.CopyPaths
) -> tuple[Layer, ...]:
    """The layers with each rule's copies as the dup tables make them.

    A copy whose chain sends elsewhere than the BID's routes say now (or none can go there),
    and every copy of a family whose table does not exempt exactly the BID tables' devices
    now (a new pipe device), reads as a copy to BID 0, which no BID is: the kernel still
    copies, but not where a desired table would, so the read differs from any desired table
    and the next apply rewrites the dup tables."""
    targets = paths.targets

    def copies(rule: FlowRule) -> tuple[int, ...]:
        dup = dups.get(rule.family)
        found = () if dup is None else dup.copies.get(rule.policy_id, ())
        if dup is None or dup.pipe_devices != paths.devices:
            return tuple(STALE_COPY for _ in found)
        return tuple(
            bid if targets.get((rule.family, bid)) == dup.targets.get(bid) else STALE_COPY
            for bid in found
        )

    return tuple(
        dataclasses.replace(
            layer,
            rules=tuple(dataclasses.replace(r, copies=copies(r)) for r in layer.rules),
        )
        for layer in layers
    )


def _rule_bids(rules: Iterable[FlowRule]) -> set[int]:
    """The BIDs whose marking chains `rules` jump to."""
    return {bid for rule in rules for bid in marked_bids(rule)}


def _bids(layers: tuple[Layer, ...]) -> frozenset[int]:
    return frozenset(layer_bids(layers))


def _kept_bids(current: TableState, mode: str) -> frozenset[int]:
    """BID chains an element update leaves in place (a replace removes unused ones)."""
    return current.bid_chains if mode == "elements" else frozenset()


def _new_chains(
    table: str, current: TableState, new: tuple[Layer, ...], settings: PremSettings
) -> list[str]:
    """The BID, balance and priority chains `new` needs that are not there yet."""
    commands = [
        bid_chain_command(table, bid, settings) for bid in sorted(_bids(new) - current.bid_chains)
    ]
    for name, (family, buckets) in sorted(balance_chains(new).items()):
        if name not in current.balance_chains:
            commands += balance_chain_commands(table, family, buckets)
    for name, tiers in sorted(priority_chains(new).items()):
        if name not in current.balance_chains:
            commands += priority_chain_commands(table, name, tiers, settings)
    return commands


def _layer_elements(
    table: str,
    index: int,
    layer: Layer,
    gone: list[FlowRule],
    came: list[FlowRule],
    *,
    sets: frozenset[str],
) -> tuple[list[str], list[str]] | None:
    """One layer's element deletes and adds; None when an add needs a set the table lacks
    (a BID declared since the table was made: the caller replaces the table)."""
    deletes: list[str] = []
    masked = bool(layer.masks)
    for part in map_parts(index, layer, gone):
        deletes += element_commands(table, part.name, part.key, part.rules, "delete", masked=masked)
    adds: list[str] = []
    for part in map_parts(index, layer, came):
        if part.verdict is not None and part.name not in sets:
            return None
        adds += element_commands(
            table,
            part.name,
            part.key,
            part.rules,
            "add",
            verdicts=part.verdict is None,
            masked=masked,
        )
    return deletes, adds


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
    commands = _new_chains(table, current, new, settings)
    adds: list[str] = []
    for index, layer in enumerate(new):
        changed = _layer_elements(table, index, layer, gone[index], came[index], sets=current.sets)
        if changed is None:
            return None
        commands += changed[0]
        adds += changed[1]
    # Balance and priority chains no rule goes to any more (a layout changed): removed after
    # the elements that went there, in the same transaction.
    unused = sorted(current.balance_chains - spread_chain_names(new))
    return (
        commands + adds + [c for name in unused for c in delete_spread_chain_commands(table, name)]
    )
