"""Reading our nftables table back from its JSON listing into layers of flow rules.

Only what the kernel lists is used: map names (position, family, shape), element keys and
comments (policy id, priority, address form), plain rules, and the mark each BID chain sets,
decoded with the settings' mask. Pure code: no kernel.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.contracts.errors import KernelError
from services.contracts.policy import PortRange, Selector
from services.prem.core.flowtable import FlowRule
from services.prem.core.nft_layers import FIELDS, Layer, Masks, key_fields
from services.prem.core.nft_render import (
    CLASSIFY_CHAIN,
    DUP_SELECT_CHAIN,
    CopyTarget,
    parse_address,
    parse_priority_chain,
)
from services.prem.core.settings import NodeSettings

log = logging.getLogger(__name__)

_PORT_PROTOCOLS = {"tcp": 6, "udp": 17, "dccp": 33, "sctp": 132, "udplite": 136}
_DSCP_NAMES = {
    **{f"cs{i}": i * 8 for i in range(8)},
    **{f"af{c}{d}": c * 8 + d * 2 for c in range(1, 5) for d in range(1, 4)},
    "ef": 46,
    "va": 44,
    "le": 1,
}


@dataclass(frozen=True)
class TableState:
    """What our table holds: its layers in evaluation order and the BID chains present."""

    layers: tuple[Layer, ...]
    bid_chains: frozenset[int]
    #: Names of the balance and priority chains present (a name says its content,
    #: `balance_chain`, `priority_chain`).
    balance_chains: frozenset[str] = frozenset()
    #: Names of the sets present (of layers `in_sets`; empty ones included).
    sets: frozenset[str] = frozenset()


#: (BID, buckets, tiers) of a verdict: buckets empty unless it goes to a balance chain, tiers
#: unless it goes to a priority chain.
Target = tuple[int | None, tuple[int, ...], tuple[tuple[int, int], ...]]


def _bad(detail: str) -> KernelError:
    return KernelError("read nftables table", detail)


def _bounds(value: Any) -> tuple[int, int]:
    """Low and high of a listed value: a number, address, symbol, prefix or range."""
    if isinstance(value, dict) and "prefix" in value:
        net = ipaddress.ip_network(f"{value['prefix']['addr']}/{value['prefix']['len']}")
        return int(net.network_address), int(net.broadcast_address)
    if isinstance(value, dict) and "range" in value:
        low, _ = _bounds(value["range"][0])
        _, high = _bounds(value["range"][1])
        return low, high
    if isinstance(value, bool):
        raise _bad(f"unexpected value {value!r}")
    if isinstance(value, int):
        return value, value
    if isinstance(value, str):
        if value in _DSCP_NAMES:
            return _DSCP_NAMES[value], _DSCP_NAMES[value]
        if value.isdigit() or value.startswith("0x"):
            number = int(value, 0)
            return number, number
        number = int(ipaddress.ip_address(value))
        return number, number
    raise _bad(f"unexpected value {value!r}")


def _rule(
    family: int, fields: Mapping[str, tuple[int, int]], text: str, target: Target
) -> FlowRule:
    """A flow rule from per-field bounds and the comment written with it."""
    try:
        policy_id, priority, forms = text.split(" ")
    except ValueError as exc:
        raise _bad(f"comment {text!r} is not ours") from exc

    def addr(name: str, form: str) -> Any:
        return None if name not in fields else parse_address(family, *fields[name], form)

    def ports(name: str) -> PortRange | None:
        return (
            None if name not in fields else PortRange(first=fields[name][0], last=fields[name][1])
        )

    def single(name: str) -> int | None:
        return None if name not in fields else fields[name][0]

    selector = Selector(
        src_addr=addr("sa", forms[0]),
        dst_addr=addr("da", forms[1]),
        next_header=single("pr"),
        src_port=ports("sp"),
        dst_port=ports("dp"),
        dscp=single("ds"),
        flow_label=single("fl"),
    )
    bid, buckets, tiers = target
    return FlowRule(int(priority), policy_id, family, selector, bid, buckets, tiers=tiers)


def _target(data: Any, chains: Mapping[str, int], balances: Mapping[str, Any]) -> Target:
    """The BID of a verdict (`goto bid_N` decoded through that chain's mark), None for drop;
    a balance chain's first bucket and buckets; a priority chain's first tier and tiers."""
    if isinstance(data, dict) and "drop" in data:
        return None, (), ()
    if isinstance(data, dict) and "goto" in data:
        name = data["goto"]["target"]
        if name in chains:
            return chains[name], (), ()
        if name in balances:
            buckets: tuple[int, ...] = balances[name]
            if name.startswith("pri_"):
                tiers = parse_priority_chain(name) or ()
                return tiers[0][0], (), tiers
            return buckets[0], buckets, ()
    raise _bad(f"unexpected verdict {data!r}")


def _balance_buckets(exprs: list[Any], chains: Mapping[str, int]) -> tuple[int, ...]:
    """The BID of each bucket of a balance chain's `jhash ... mod N vmap { ... }` rule."""
    for expr in exprs:
        vmap = expr.get("vmap") if isinstance(expr, dict) else None
        if vmap is None or "jhash" not in vmap["key"]:
            continue
        size = int(vmap["key"]["jhash"]["mod"])
        buckets: list[int | None] = [None] * size
        for key, verdict in vmap["data"]["set"]:
            low, high = _bounds(key)
            bid, _, _ = _target(verdict, chains, {})
            for index in range(low, high + 1):
                buckets[index] = bid
        if any(b is None for b in buckets):
            raise _bad(f"balance map with unassigned buckets: {buckets}")
        return tuple(b for b in buckets if b is not None)
    raise _bad("balance chain without a jhash map")


def _chain_bid(exprs: list[Any], settings: NodeSettings) -> int | None:
    """The BID whose mark a chain sets (None if it is not a marking chain)."""
    for expr in exprs:
        mangle = expr.get("mangle") if isinstance(expr, dict) else None
        if mangle and mangle.get("key") == {"meta": {"key": "mark"}}:
            value = mangle["value"]
            mark = value["|"][1] if isinstance(value, dict) and "|" in value else value
            return (int(mark) & settings.mark_mask) >> settings.mark_shift
    return None


#: A masked address field in a map or set name: `da48` (`nft_render._shape_text`).
_MASKED = re.compile(r"(sa|da)(\d{1,3})")


def _shape(family: int, tokens: list[str], name: str) -> tuple[tuple[str, ...], Masks]:
    """The shape and masks a map or set name spells; refused when it is not ours."""
    shape: list[str] = []
    masks: list[tuple[str, int]] = []
    for token in tokens:
        masked = _MASKED.fullmatch(token)
        field = token if masked is None else masked.group(1)
        if masked is not None:
            length = int(masked.group(2))
            if not 0 <= length < (32 if family == 4 else 128):
                raise _bad(f"map {name!r} is not ours")
            masks.append((field, length))
        if field not in FIELDS:
            raise _bad(f"map {name!r} is not ours")
        shape.append(field)
    return tuple(shape), tuple(masks)


def _key_bounds(
    key: tuple[str, ...], values: list[Any], masks: Masks, family: int
) -> dict[str, tuple[int, int]]:
    """Per-field bounds of an element's key; a masked field's network address stands for
    its whole prefix."""
    fields = {f: _bounds(v) for f, v in zip(key, values, strict=True)}
    bits = 32 if family == 4 else 128
    for name, length in masks:
        low = fields[name][0]
        fields[name] = (low, low | ((1 << (bits - length)) - 1))
    return fields


def _map_layer(
    name: str, elements: list[Any], chains: Mapping[str, int], balances: Mapping[str, Any]
) -> tuple[str, Layer]:
    """Decode `l<i>_<family>_<fields...>[_<dscp guard>]` and its elements.

    Returns the layer position (`l<i>`), so that the maps of one guarded layer join up.
    """
    parts = name.split("_")
    guard = int(parts.pop()) if parts[-1].isdigit() and len(parts) > 2 else None
    family = int(parts[1])
    if not re.fullmatch(r"[lh]\d+", parts[0]) or family not in (4, 6):
        raise _bad(f"map {name!r} is not ours")
    shape, masks = _shape(family, parts[2:], name)
    key = key_fields(family, shape)
    rules = []
    for key_part, data in elements:
        elem = key_part["elem"]
        val = elem["val"]
        values = val["concat"] if isinstance(val, dict) and "concat" in val else [val]
        fields = _key_bounds(key, values, masks, family)
        if guard is not None:
            fields["ds"] = (guard, guard)
        target = _target(data, chains, balances)
        rules.append(_rule(family, fields, elem.get("comment", ""), target))
    exact = parts[0].startswith("h")
    return parts[0], Layer(family, shape, tuple(rules), exact, masks if exact else ())


def _set_layer(name: str, elements: list[Any], target: Target) -> tuple[str, Layer]:
    """Decode `s<i>_<family>_<fields...>_<b<BID>|drop>` (a set of a layer `in_sets`) and
    its elements, whose verdict is its lookup rule's. Returns the layer position (`s<i>`), so
    that the sets of one layer join up."""
    parts = name.split("_")
    suffix = parts.pop()
    family = int(parts[1])
    bid, buckets, tiers = target
    if (
        not re.fullmatch(r"s\d+", parts[0])
        or family not in (4, 6)
        or suffix != ("drop" if bid is None else f"b{bid}")
        or buckets
        or tiers
    ):
        raise _bad(f"set {name!r} is not ours")
    shape, masks = _shape(family, parts[2:], name)
    key = key_fields(family, shape)
    rules = []
    for item in elements:
        elem = item["elem"] if isinstance(item, dict) and "elem" in item else {"val": item}
        val = elem["val"]
        values = val["concat"] if isinstance(val, dict) and "concat" in val else [val]
        fields = _key_bounds(key, values, masks, family)
        rules.append(_rule(family, fields, elem.get("comment", ""), target))
    return parts[0], Layer(family, shape, tuple(rules), True, masks)


def _set_lookup(exprs: list[Any]) -> str | None:
    """The set a classification rule looks its key up in (`... @name`), if it does."""
    for expr in exprs:
        match = expr.get("match") if isinstance(expr, dict) else None
        right = match.get("right") if isinstance(match, dict) else None
        if isinstance(right, str) and right.startswith("@"):
            return right[1:]
    return None


def _plain_layer(
    exprs: list[Any], text: str, chains: Mapping[str, int], balances: Mapping[str, Any]
) -> Layer:
    """Decode a rule matching field by field (nft may have folded `meta l4proto` into `udp`)."""
    family, fields = _plain_match(exprs)
    target: Target = (None, (), ())
    for expr in exprs:
        if "match" not in expr:
            target = _target(expr, chains, balances)
    shape = tuple(f for f in FIELDS if f in fields)
    return Layer(family, shape, (_rule(family, fields, text, target),))


def _plain_match(exprs: list[Any]) -> tuple[int, dict[str, tuple[int, int]]]:
    """The family and per-field bounds of a rule's matches (its other statements skipped)."""
    family = 0
    fields: dict[str, tuple[int, int]] = {}
    for expr in exprs:
        if "match" not in expr:
            continue
        left, right = expr["match"]["left"], expr["match"]["right"]
        if left == {"meta": {"key": "nfproto"}}:
            family = 4 if right in ("ipv4", 2) else 6
        elif left == {"meta": {"key": "l4proto"}}:
            number = _PORT_PROTOCOLS.get(right) if isinstance(right, str) else None
            fields["pr"] = (number, number) if number is not None else _bounds(right)
        elif "payload" in left:
            proto, field = left["payload"]["protocol"], left["payload"]["field"]
            if proto in ("ip", "ip6"):
                family = 4 if proto == "ip" else 6
                short = {"saddr": "sa", "daddr": "da", "dscp": "ds", "flowlabel": "fl"}[field]
            else:
                short = {"sport": "sp", "dport": "dp"}[field]
                if proto in _PORT_PROTOCOLS:
                    fields["pr"] = (_PORT_PROTOCOLS[proto], _PORT_PROTOCOLS[proto])
            fields[short] = _bounds(right)
        else:
            raise _bad(f"unexpected match {left!r}")
    return family, fields


def _layers(
    classify: list[dict[str, Any]],
    maps: Mapping[str, list[Any]],
    chains: Mapping[str, int],
    balances: Mapping[str, Any],
) -> list[Layer]:
    """The layers in evaluation order; the maps of one guarded layer follow each other, and
    so do the sets of one layer `in_sets`."""
    layers: list[Layer] = []
    last_position = ""
    for rule in classify:
        lookup = next((e["vmap"] for e in rule["expr"] if "vmap" in e), None)
        in_set = _set_lookup(rule["expr"]) if lookup is None else None
        if in_set is not None:
            verdicts = [e for e in rule["expr"] if "match" not in e]
            if len(verdicts) != 1:
                raise _bad(f"rule on set {in_set!r} is not ours")
            target = _target(verdicts[0], chains, balances)
            position, layer = _set_layer(in_set, maps.get(in_set, []), target)
        elif lookup is None:
            layers.append(_plain_layer(rule["expr"], rule.get("comment", ""), chains, balances))
            last_position = ""
            continue
        else:
            name = lookup["data"].lstrip("@")
            position, layer = _map_layer(name, maps.get(name, []), chains, balances)
        if position == last_position:
            layer = Layer(
                layer.family,
                layer.shape,
                layers.pop().rules + layer.rules,
                layer.exact,
                layer.masks,
            )
        layers.append(layer)
        last_position = position
    return layers


#: Base chains that must exist, hooked and jumping to the classification, for anything to apply.
HOOKS = ("prerouting", "output")


def _hooked(objects: list[dict[str, Any]], table: str) -> bool:
    """Whether both base chains are hooked and jump to the classification chain."""
    hooked = {
        o["chain"]["name"]
        for o in objects
        if "chain" in o and o["chain"]["table"] == table and o["chain"].get("hook") in HOOKS
    }
    jumping = {
        o["rule"]["chain"]
        for o in objects
        if "rule" in o
        and o["rule"]["table"] == table
        and {"jump": {"target": CLASSIFY_CHAIN}} in o["rule"]["expr"]
    }
    return all(name in hooked and name in jumping for name in HOOKS)


def _sorted_out(
    objects: list[dict[str, Any]], table: str
) -> tuple[dict[str, list[Any]], set[str], list[dict[str, Any]], dict[str, list[Any]]]:
    """Our table's maps and sets (name -> elements), set names, classification rules, and
    the other chains' statements (name -> expressions)."""
    maps: dict[str, list[Any]] = {}
    sets: set[str] = set()
    classify: list[dict[str, Any]] = []
    marking: dict[str, list[Any]] = {}
    for obj in objects:
        holder = obj.get("map", obj.get("set"))  # a verdict map, or a set of a layer in sets
        if holder is not None and holder["table"] == table:
            maps[holder["name"]] = holder.get("elem", [])
            if "set" in obj:
                sets.add(holder["name"])
        elif "rule" in obj and obj["rule"]["table"] == table:
            rule = obj["rule"]
            if rule["chain"] == CLASSIFY_CHAIN:
                classify.append(rule)
            elif rule["chain"] not in HOOKS:
                marking.setdefault(rule["chain"], []).extend(rule["expr"])
    return maps, sets, classify, marking


def parse_table(listing: Mapping[str, Any], table: str, settings: NodeSettings) -> TableState:
    """Layers and BID chains of our table in a `list table` JSON document.

    Without both hooked base chains nothing is enforced, so no layers are reported; a table
    holding something we did not write is reported the same way. Either way the next apply
    replaces the whole table.
    """
    objects = [o for o in listing.get("nftables", []) if isinstance(o, dict)]
    chains: dict[str, int] = {}
    maps, sets, classify, marking = _sorted_out(objects, table)
    for chain, exprs in marking.items():
        bid = _chain_bid(exprs, settings)
        if bid is not None:
            chains[chain] = bid
    balances: dict[str, tuple[int, ...]] = {}
    try:
        for chain, exprs in marking.items():
            if re.fullmatch(r"bal[46]_\d+_[0-9a-f]{12}", chain):
                balances[chain] = _balance_buckets(exprs, chains)
            elif parse_priority_chain(chain) is not None:
                balances[chain] = ()  # its name says its tiers (`_target`)
        layers = _layers(classify, maps, chains, balances)
    except (KernelError, KeyError, ValueError, TypeError, IndexError) as exc:
        log.warning("table %s holds rules that are not ours (%s): reading it as empty", table, exc)
        layers = []
    if not _hooked(objects, table):
        layers = []
    return TableState(
        tuple(layers), frozenset(chains.values()), frozenset(balances), frozenset(sets)
    )


@dataclass(frozen=True)
class DupState:
    """What one dup table (`ip6` or `ip`) holds: each policy's copy BIDs, and the target
    each copy chain sends to."""

    copies: Mapping[str, tuple[int, ...]]
    targets: Mapping[int, CopyTarget]
    #: The devices whose packets are never copied (`iifname { ... } return`).
    pipe_devices: frozenset[str] = frozenset()


def parse_dup_table(listing: Mapping[str, Any], table: str) -> DupState:
    """Copies per policy id (`jump copy_N` rules of the selection chain whose chain holds a
    `dup` statement) and the target of each copy chain; nothing when not hooked."""
    objects = [o for o in listing.get("nftables", []) if isinstance(o, dict)]
    targets: dict[int, CopyTarget] = {}
    jumps: list[tuple[str, int]] = []
    devices: set[str] = set()
    hooked = {
        o["chain"]["name"]
        for o in objects
        if "chain" in o and o["chain"]["table"] == table and o["chain"].get("hook")
    }
    for obj in objects:
        rule = obj.get("rule")
        if rule is None or rule["table"] != table:
            continue
        found = re.fullmatch(r"copy_(\d+)", rule["chain"])
        for expr in rule["expr"]:
            if found and isinstance(expr, dict) and "dup" in expr:
                targets[int(found.group(1))] = _copy_target(expr["dup"])
            if rule["chain"] == DUP_SELECT_CHAIN and isinstance(expr, dict):
                devices |= _iifnames(expr)
            if rule["chain"] == DUP_SELECT_CHAIN and isinstance(expr, dict) and "jump" in expr:
                name = re.fullmatch(r"copy_(\d+)", expr["jump"]["target"])
                if name:
                    jumps.append((rule.get("comment", "").split(" ")[0], int(name.group(1))))
    copies: dict[str, tuple[int, ...]] = {}
    if {"prerouting", "output"} <= hooked:
        for policy_id, bid in jumps:
            if bid in targets:
                copies[policy_id] = (*copies.get(policy_id, ()), bid)
    return DupState(copies, targets, frozenset(devices))


def _copy_target(dup: Mapping[str, Any]) -> CopyTarget:
    """A `dup` statement: to one address, or to a map from destination prefix to address."""
    addr = dup["addr"]
    if not isinstance(addr, dict):
        return CopyTarget(str(addr), str(dup["dev"]))
    pairs = []
    for key, gateway in addr["map"]["data"]["set"]:
        if isinstance(key, dict) and "prefix" in key:
            prefix = f"{key['prefix']['addr']}/{key['prefix']['len']}"
        else:
            prefix = str(key)
        pairs.append(
            (ipaddress.ip_network(prefix).with_prefixlen, str(ipaddress.ip_address(gateway)))
        )
    return CopyTarget("", str(dup["dev"]), tuple(sorted(pairs)))


def _iifnames(expr: Mapping[str, Any]) -> set[str]:
    """The device names of an `iifname { ... }` (or `iifname "x"`) match, else none."""
    match = expr.get("match")
    if not isinstance(match, dict) or match.get("left") != {"meta": {"key": "iifname"}}:
        return set()
    right = match["right"]
    values = right["set"] if isinstance(right, dict) and "set" in right else [right]
    return {str(value) for value in values}
