"""Grouping flow rules into nftables layers: one verdict-map lookup per layer, not per policy.

A layer holds rules of one family and one shape (the selector fields present). Rules that
overlap never share a layer, and a rule always sits in a later layer than every
higher-precedence rule it overlaps, so evaluating the layers in order and stopping at the first
hit gives exactly the first-match semantics of `classify`. Pure code: no kernel.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property

from services.contracts.policy import AddressRange, Selector, address_bounds
from services.prem.core.flowtable import FlowRule, FlowTable

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

#: A selector's key text in the fields of a shape, canonical: equal for selectors matching the
#: same values, and holding a '/' or '-' (a prefix or range) unless it names a single point.
PointText = Callable[[Selector, tuple[str, ...]], str]

#: Inclusive bounds per field, flattened: (low0, high0, low1, high1, ...), one tuple per rule
#: because layering allocates one for each of thousands of rules.
Box = tuple[int, ...]

#: The address fields of an exact layer matched as prefixes of one length each, with that
#: length: (("da", 48),) when every rule's destination is a /48 (see `Layer.masks`).
Masks = tuple[tuple[str, int], ...]

#: The address key fields and the Selector attribute each reads.
_ADDRESS_ATTRS = (("sa", "src_addr"), ("da", "dst_addr"))


def masks_of(selector: Selector, shape: tuple[str, ...]) -> Masks | None:
    """The prefix lengths of the selector's address fields in `shape` that are prefixes, not
    single addresses; None when one is a range of several addresses (never an exact key)."""
    fields = selector.__dict__
    found: list[tuple[str, int]] = []
    for name, attribute in _ADDRESS_ATTRS:
        if name not in shape:
            continue
        value = fields[attribute]
        if isinstance(value, AddressRange):
            if value.first != value.last:
                return None
            continue
        if value.prefixlen != value.max_prefixlen:
            found.append((name, value.prefixlen))
    return tuple(found)


def shape_of(selector: Selector) -> tuple[str, ...]:
    """The selector fields present, in key order."""
    fields = selector.__dict__  # one dict read per field instead of attribute lookups
    return tuple([name for name, attr in _FIELD_ATTRS if fields[attr] is not None])


#: Each key field and the Selector attribute it reads, in FIELDS order.
_FIELD_ATTRS = tuple(
    zip(
        FIELDS,
        ("src_addr", "dst_addr", "next_header", "src_port", "dst_port", "dscp", "flow_label"),
        strict=True,
    )
)


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
    """The rule's match as inclusive integer bounds per field in FIELDS order (absent = all)."""
    sel = rule.selector
    top = 0xFFFFFFFF if rule.family == 4 else (1 << 128) - 1
    sa, da = sel.src_addr, sel.dst_addr
    s_lo, s_hi = (0, top) if sa is None else address_bounds(sa)[1:]
    d_lo, d_hi = (0, top) if da is None else address_bounds(da)[1:]
    sp, dp = sel.src_port, sel.dst_port
    pr, ds, fl = sel.next_header, sel.dscp, sel.flow_label
    return (
        s_lo, s_hi, d_lo, d_hi,
        *((0, 255) if pr is None else (pr, pr)),
        *((0, 65535) if sp is None else (sp.first, sp.last)),
        *((0, 65535) if dp is None else (dp.first, dp.last)),
        *((0, 63) if ds is None else (ds, ds)),
        *((0, 0xFFFFF) if fl is None else (fl, fl)),
    )  # fmt: skip


def boxes_overlap(a: Box, b: Box) -> bool:
    """True when some packet falls in both boxes (same as `selectors_overlap` within a family)."""
    return all(a[i] <= b[i + 1] and b[i] <= a[i + 1] for i in range(0, len(a), 2))


@dataclass(frozen=True)
class Layer:
    """Rules evaluated together: one verdict map (one per DSCP value in a guarded IPv6 layer,
    so at most 64 lookups), or, when not mappable, a single plain rule."""

    family: int
    shape: tuple[str, ...]
    rules: tuple[FlowRule, ...]
    #: Every key field of every rule is one value: the map can be a hash, not an interval set
    #: (cheaper to load; the common case of host addresses and single ports). With `masks`,
    #: an address field counts as one value once masked to its prefix length.
    exact: bool = False
    #: The address fields of an exact layer whose rules all match prefixes of one length
    #: (each field its own): looked up as `ip6 daddr & <mask>`, the prefix's network address
    #: an exact key. So an HA's policies scoped by each router's /48 stay hash elements that a
    #: change adds and deletes one by one: deleting elements of an interval set costs nft's
    #: user space time that grows with the set (130 ms at 100,000, `bench.fleet_layouts`).
    masks: Masks = ()
    #: Each rule's map key text, when the layering already made it (`_point_layers`); not part
    #: of the layer's identity.
    keys: tuple[str, ...] | None = field(default=None, compare=False, repr=False)

    @property
    def is_map(self) -> bool:
        """Whether this layer is rendered as a verdict map."""
        return mappable(self.family, self.shape)

    def dscp_values(self) -> tuple[int, ...]:
        """DSCP values of a guarded layer: one map each (empty when not guarded)."""
        if not dscp_guarded(self.family, self.shape):
            return ()
        return tuple(sorted({r.selector.dscp for r in self.rules if r.selector.dscp is not None}))

    @cached_property
    def in_sets(self) -> bool:
        """Whether the layer is rendered as one plain set per verdict instead of a verdict map:
        an exact, unguarded map layer whose rules only go to a BID or drop. Each set is looked
        up by a rule that then goes to its BID's chain (or drops). A layer's rules never
        overlap, so at most one of its sets holds a packet's key, as one map would. Why: an
        element added to a verdict map with `goto`s makes the kernel check every jump of the
        table at commit, an element added to a set does not (docs/kernel.md), so one mobile
        router's change costs the same beside 100,000 policies as beside 10."""
        return (
            self.is_map
            and self.exact
            and not dscp_guarded(self.family, self.shape)
            and all(not r.buckets and not r.tiers for r in self.rules)
        )

    @cached_property
    def targets(self) -> frozenset[int | None]:
        """The BIDs (None: drop) the rules go to: each has a set when `in_sets`."""
        return frozenset(r.bid for r in self.rules)

    def descriptor(self) -> tuple[object, ...]:
        """What must be equal for two layers to be updated element by element. A layer
        `in_sets` has a set for each declared BID whatever its rules go to; an element for a
        set the table lacks is the element batch's to notice (by the set's name)."""
        rules = () if self.is_map else self.rules
        return (
            self.family,
            self.shape,
            self.dscp_values(),
            self.exact,
            self.masks,
            rules,
            self.in_sets,
        )


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
        self._key = [FIELDS.index(f) for f in key_fields(family, shape)]
        self._addresses = [FIELDS.index(f) for f in ("sa", "da") if f in shape]
        self.exact = mappable(family, shape)
        self.masks: Masks | None = None

    def add(self, rule: FlowRule, box: Box) -> None:
        self.rules.append(rule)
        low, high = box[2 * self._dim], box[2 * self._dim + 1]
        bisect.insort(self._entries, (low, len(self.rules), box))
        self._widest = max(self._widest, high - low)
        if self.exact:
            self.exact = self._still_exact(rule, box)

    def _still_exact(self, rule: FlowRule, box: Box) -> bool:
        """Whether the layer stays exact with `rule`: its non-address key fields one value
        each, its addresses prefixes of the lengths of the layer's first rule."""
        for i in self._key:
            if box[2 * i] != box[2 * i + 1] and i not in self._addresses:
                return False
        masks = masks_of(rule.selector, self.shape)
        if masks is None or (self.masks is not None and masks != self.masks):
            return False
        self.masks = masks
        return True

    def overlaps(self, box: Box) -> bool:
        low, high = box[2 * self._dim], box[2 * self._dim + 1]
        start = bisect.bisect_left(self._entries, (low - self._widest,))
        for entry_low, _, other in self._entries[start:]:
            if entry_low > high:
                return False
            if boxes_overlap(box, other):
                return True
        return False


def assign_layers(
    table: Iterable[FlowRule], point_text: PointText | None = None
) -> tuple[Layer, ...]:
    """Layers for `table` (taken in precedence order), greedily and deterministically.

    Each rule goes to the first layer of its family and shape that comes strictly after every
    layer holding an earlier rule it overlaps; a new layer is appended when there is none.
    Rules that cannot be map elements get a layer of their own. With `point_text` (the
    renderer's key text, `nft_render.key_text`), a table of distinct single points is layered
    in one pass (`_point_layers`), to the same result.
    """
    ordered = sorted(table, key=FlowRule.precedence)
    fast = None if point_text is None else _point_layers(ordered, point_text)
    return greedy_layers(ordered) if fast is None else fast


def greedy_layers(ordered: list[FlowRule]) -> tuple[Layer, ...]:
    """`assign_layers` for rules already in precedence order, by the general algorithm (no
    shortcut: the reference the shortcut of `_point_layers` is tested against)."""
    layers: list[_Building] = []
    by_shape: dict[tuple[int, tuple[str, ...]], list[int]] = {}
    #: mappable() per (family, shape), asked once per key instead of once per rule.
    shareable_of: dict[tuple[int, tuple[str, ...]], bool] = {}
    for rule in ordered:
        box = box_of(rule)
        floor = 0
        for index in range(len(layers) - 1, -1, -1):
            if layers[index].family == rule.family and layers[index].overlaps(box):
                floor = index + 1
                break
        shape = shape_of(rule.selector)
        key = (rule.family, shape)
        shareable = shareable_of.get(key)
        if shareable is None:
            shareable = shareable_of[key] = mappable(rule.family, shape)
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
    return tuple(
        Layer(b.family, b.shape, tuple(b.rules), b.exact, (b.masks or ()) if b.exact else ())
        for b in layers
    )


def _point_layers(ordered: list[FlowRule], text: PointText) -> tuple[Layer, ...] | None:
    """The layers of the common large table in one pass, or None when it is not that table.

    When every rule of a family has the same mappable, unguarded shape and matches a single
    point in it (host addresses, single ports; or prefixes of one length per address field,
    each prefix a point of that length), two rules overlap exactly when their points are
    equal. If no point repeats, no rule overlaps another: the general algorithm would put
    each family in one exact layer, in precedence order, layers ordered by their first rule.
    That is what this returns, without boxes and overlap index (most of the layering time of
    such a table), with each rule's key text kept for rendering (`Layer.keys`).
    """
    shapes: dict[int, tuple[str, ...]] = {}
    masks: dict[int, Masks] = {}
    seen: dict[int, set[str]] = {}
    members: dict[int, list[FlowRule]] = {}
    keys: dict[int, list[str]] = {}
    for rule in ordered:
        family, sel = rule.family, rule.selector
        shape = shapes.get(family)
        first = shape is None
        if shape is None:
            shape = shapes[family] = shape_of(sel)
            if not mappable(family, shape) or dscp_guarded(family, shape):
                return None
            seen[family], members[family], keys[family] = set(), [], []
        elif shape_of(sel) != shape:
            return None
        point = text(sel, shape)
        if "-" in point or point in seen[family]:
            return None
        # A prefix is a point of its own length: the same lengths in every rule of the family.
        found = masks_of(sel, shape) if "/" in point else ()
        if found is None or (not first and found != masks[family]):
            return None
        masks[family] = found
        seen[family].add(point)
        members[family].append(rule)
        keys[family].append(point)
    return tuple(
        Layer(
            family,
            shape,
            tuple(members[family]),
            True,
            masks[family],
            keys=tuple(keys[family]),
        )
        for family, shape in shapes.items()
    )


def flatten(layers: Iterable[Layer]) -> FlowTable:
    """The flow table the layers enforce, in precedence order."""
    return tuple(sorted((r for layer in layers for r in layer.rules), key=FlowRule.precedence))
