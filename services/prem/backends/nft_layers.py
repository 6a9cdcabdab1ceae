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
#: Fields tried, in order, for the per-layer overlap index (addresses and ports are selective).
_INDEX_ORDER = ("sa", "da", "dp", "sp", "ds", "pr", "fl")

Box = tuple[tuple[int, int], ...]


def shape_of(selector: Selector) -> tuple[str, ...]:
    """The selector fields present, in key order."""
    present = {
        "sa": selector.src_addr is not None,
        "da": selector.dst_addr is not None,
        "pr": selector.next_header is not None,
        "sp": selector.src_port is not None,
        "dp": selector.dst_port is not None,
        "ds": selector.dscp is not None,
        "fl": selector.flow_label is not None,
    }
    return tuple(name for name in FIELDS if present[name])


def mappable(shape: tuple[str, ...]) -> bool:
    """Whether rules of this shape can live in a verdict map (else: one plain rule each)."""
    return 0 < len(shape) <= MAX_KEY_FIELDS and "fl" not in shape


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
    """Rules evaluated by one lookup: a verdict map, or (when not mappable) one plain rule."""

    family: int
    shape: tuple[str, ...]
    rules: tuple[FlowRule, ...]

    @property
    def is_map(self) -> bool:
        """Whether this layer is rendered as a verdict map."""
        return mappable(self.shape)

    def descriptor(self) -> tuple[int, tuple[str, ...], tuple[FlowRule, ...]]:
        """What must be equal for two layers to be updated element by element."""
        return (self.family, self.shape, () if self.is_map else self.rules)


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
        candidates = by_shape.setdefault(key, []) if mappable(shape) else []
        position = bisect.bisect_left(candidates, floor)
        if position < len(candidates):
            target = layers[candidates[position]]
        else:
            target = _Building(rule.family, shape)
            layers.append(target)
            if mappable(shape):
                candidates.append(len(layers) - 1)
        target.add(rule, box)
    return tuple(Layer(b.family, b.shape, tuple(b.rules)) for b in layers)


def layer_of(layers: tuple[Layer, ...]) -> dict[FlowRule, int]:
    """Index of the layer holding each rule."""
    return {rule: index for index, layer in enumerate(layers) for rule in layer.rules}


def flatten(layers: Iterable[Layer]) -> FlowTable:
    """The flow table the layers enforce, in precedence order."""
    return tuple(sorted((r for layer in layers for r in layer.rules), key=FlowRule.precedence))
