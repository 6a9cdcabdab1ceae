"""Grouping flow rules into nftables layers: one verdict-map lookup per layer, not per policy.

A layer holds rules of one family and one shape (the selector fields present). Rules that
overlap never share a layer, and a rule always sits in a later layer than every
higher-precedence rule it overlaps, so evaluating the layers in order and stopping at the first
hit gives exactly the first-match semantics of `classify`. Pure code: no kernel.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass

from services.contracts.policy import Selector, address_bounds
from services.prem.flowtable import FlowRule, FlowTable

#: Selector fields in the fixed order they appear in a map key (flow label last: never in a map).
FIELDS = ("sa", "da", "pr", "sp", "dp", "ds", "fl")
#: nft 1.0.6 cannot list a concatenated key of more than five fields back correctly.
MAX_KEY_FIELDS = 5
#: nft 1.0.6 computes an IPv6 DSCP map key wrongly on little-endian hosts (it shifts the
#: network-order register without a byte-order swap), while a plain `ip6 dscp N` match works.
#: So an IPv6 layer with DSCP matches the DSCP before the lookup: one map per DSCP value.
GUARDED_FAMILY = 6
#: Fields tried, in order, for the per-layer overlap index (addresses and ports are selective).
_INDEX_ORDER = ("sa", "da", "dp", "sp", "ds", "pr", "fl")

Box = tuple[tuple[int, int], ...]


def shape_of(selector: Selector) -> tuple[str, ...]:
    """The selector fields present, in key order."""
    values = (
        selector.src_addr,
        selector.dst_addr,
        selector.next_header,
        selector.src_port,
        selector.dst_port,
        selector.dscp,
        selector.flow_label,
    )
    return tuple(name for name, value in zip(FIELDS, values, strict=True) if value is not None)


def dscp_guarded(family: int, shape: tuple[str, ...]) -> bool:
    """Whether the DSCP is matched before the map lookup instead of inside its key."""
    return family == GUARDED_FAMILY and "ds" in shape


def key_fields(family: int, shape: tuple[str, ...]) -> tuple[str, ...]:
    """The fields of the map key for a layer of this family and shape."""
    if dscp_guarded(family, shape):
        return tuple(f for f in shape if f != "ds")
    return shape


def mappable(family: int, shape: tuple[str, ...]) -> bool:
    """Whether rules of this shape can live in verdict maps (else: one plain rule each)."""
    return 0 < len(key_fields(family, shape)) <= MAX_KEY_FIELDS and "fl" not in shape


def box_of(rule: FlowRule) -> Box:
    """The rule's match as one inclusive integer interval per field (absent = everything)."""
    sel = rule.selector
    full_addr = (0, 2**32 - 1) if rule.family == 4 else (0, 2**128 - 1)
    out: list[tuple[int, int]] = []
    for match in (sel.src_addr, sel.dst_addr):
        out.append(full_addr if match is None else address_bounds(match)[1:])
    out.append((0, 255) if sel.next_header is None else (sel.next_header, sel.next_header))
    for ports in (sel.src_port, sel.dst_port):
        out.append((0, 65535) if ports is None else (ports.first, ports.last))
    out.append((0, 63) if sel.dscp is None else (sel.dscp, sel.dscp))
    out.append((0, 0xFFFFF) if sel.flow_label is None else (sel.flow_label, sel.flow_label))
    return tuple(out)


def boxes_overlap(a: Box, b: Box) -> bool:
    """True when some packet falls in both boxes (same as `selectors_overlap` within a family)."""
    return all(alo <= bhi and blo <= ahi for (alo, ahi), (blo, bhi) in zip(a, b, strict=True))


@dataclass(frozen=True)
class Layer:
    """Rules evaluated together: one verdict map (one per DSCP value in a guarded IPv6 layer,
    so at most 64 lookups), or, when not mappable, a single plain rule."""

    family: int
    shape: tuple[str, ...]
    rules: tuple[FlowRule, ...]

    @property
    def is_map(self) -> bool:
        """Whether this layer is rendered as a verdict map."""
        return mappable(self.family, self.shape)

    def dscp_values(self) -> tuple[int, ...]:
        """DSCP values of a guarded layer: one map each (empty when not guarded)."""
        if not dscp_guarded(self.family, self.shape):
            return ()
        return tuple(sorted({r.selector.dscp for r in self.rules if r.selector.dscp is not None}))

    def descriptor(self) -> tuple[object, ...]:
        """What must be equal for two layers to be updated element by element."""
        rules = () if self.is_map else self.rules
        return (self.family, self.shape, self.dscp_values(), rules)


class _Building:
    """A layer under construction, with an index that finds overlapping rules quickly.

    Rules are kept sorted by their low bound in one field; with the widest interval seen in
    that field, a query only looks at rules whose low bound is within reach.
    """

    def __init__(self, family: int, shape: tuple[str, ...]) -> None:
        self.family = family
        self.shape = shape
        self.rules: list[FlowRule] = []
        self._dim = FIELDS.index(next((f for f in _INDEX_ORDER if f in shape), "sa"))
        self._entries: list[tuple[int, int, Box]] = []
        self._widest = 0

    def add(self, rule: FlowRule, box: Box) -> None:
        self.rules.append(rule)
        low, high = box[self._dim]
        bisect.insort(self._entries, (low, len(self.rules), box))
        self._widest = max(self._widest, high - low)

    def overlaps(self, box: Box) -> bool:
        low, high = box[self._dim]
        start = bisect.bisect_left(self._entries, (low - self._widest,))
        for entry_low, _, other in self._entries[start:]:
            if entry_low > high:
                return False
            if boxes_overlap(box, other):
                return True
        return False


def assign_layers(table: Iterable[FlowRule]) -> tuple[Layer, ...]:
    """Layers for `table` (taken in precedence order), greedily and deterministically.

    Each rule goes to the first layer of its family and shape that comes strictly after every
    layer holding an earlier rule it overlaps; a new layer is appended when there is none.
    Rules that cannot be map elements get a layer of their own.
    """
    layers: list[_Building] = []
    by_shape: dict[tuple[int, tuple[str, ...]], list[int]] = {}
    for rule in sorted(table, key=FlowRule.precedence):
        box = box_of(rule)
        floor = 0
        for index in range(len(layers) - 1, -1, -1):
            if layers[index].family == rule.family and layers[index].overlaps(box):
                floor = index + 1
                break
        shape = shape_of(rule.selector)
        key = (rule.family, shape)
        shareable = mappable(rule.family, shape)
        candidates = by_shape.setdefault(key, []) if shareable else []
        position = bisect.bisect_left(candidates, floor)
        if position < len(candidates):
            target = layers[candidates[position]]
        else:
            target = _Building(rule.family, shape)
            layers.append(target)
            if shareable:
                candidates.append(len(layers) - 1)
        target.add(rule, box)
    return tuple(Layer(b.family, b.shape, tuple(b.rules)) for b in layers)


def flatten(layers: Iterable[Layer]) -> FlowTable:
    """The flow table the layers enforce, in precedence order."""
    return tuple(sorted((r for layer in layers for r in layer.rules), key=FlowRule.precedence))
