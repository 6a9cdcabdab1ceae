"""nft command text for a layered flow table, built only from validated model data.

Every value written is an integer, an address or network from `ipaddress`, or a policy id that
the contract restricts to `[A-Za-z0-9_.:-]`, so no message text can reach the nft parser.
Pure code: no kernel.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from services.contracts.policy import AddressMatch, AddressRange, PortRange, Selector
from services.prem.core.flowtable import FlowRule
from services.prem.core.nft_layers import Layer, dscp_guarded, key_fields
from services.prem.core.settings import NodeSettings

CLASSIFY_CHAIN = "classify"
FAMILY_NAMES = {4: "ipv4", 6: "ipv6"}
_ADDR_TYPE = {4: "ipv4_addr", 6: "ipv6_addr"}
_TYPES = {"pr": "inet_proto", "sp": "inet_service", "dp": "inet_service", "ds": "dscp"}
#: The contract's policy id pattern, checked again here because the id goes into nft text.
_POLICY_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def table_name(settings: NodeSettings) -> str:
    """The one table this back end owns."""
    return f"{settings.name_prefix}_prem"


def bid_chain(bid: int) -> str:
    """The chain that marks packets for `bid`."""
    return f"bid_{bid}"


@dataclass(frozen=True)
class MapPart:
    """One verdict map of a layer: its name, key fields, DSCP guard and elements."""

    name: str
    key: tuple[str, ...]
    guard: int | None
    rules: tuple[FlowRule, ...]


def map_name(index: int, layer: Layer, guard: int | None = None) -> str:
    """Map name carrying the layer's position, family, shape and DSCP guard (read() decodes it)."""
    kind = "h" if layer.exact else "l"
    name = f"{kind}{index}_{layer.family}_{'_'.join(layer.shape)}"
    return name if guard is None else f"{name}_{guard}"


def map_parts(index: int, layer: Layer, rules: Iterable[FlowRule] | None = None) -> list[MapPart]:
    """The maps holding `rules` (default: all of the layer's), one per DSCP value if guarded."""
    chosen = layer.rules if rules is None else tuple(rules)
    key = key_fields(layer.family, layer.shape)
    if not dscp_guarded(layer.family, layer.shape):
        return [MapPart(map_name(index, layer), key, None, chosen)]
    return [
        MapPart(
            map_name(index, layer, value),
            key,
            value,
            tuple(r for r in chosen if r.selector.dscp == value),
        )
        for value in layer.dscp_values()
    ]


def _expr(field: str, family: int) -> str:
    ip = "ip" if family == 4 else "ip6"
    return {
        "sa": f"{ip} saddr",
        "da": f"{ip} daddr",
        "pr": "meta l4proto",
        "sp": "th sport",
        "dp": "th dport",
        "ds": f"{ip} dscp",
        "fl": "ip6 flowlabel",
    }[field]


def _ip_text(value: int, family: int) -> str:
    """An address as text through the C library: several times cheaper than ipaddress's
    `str()`, and the hot spot of rendering thousands of elements.

    The one use of the `socket` module in the core: `inet_ntop` is a pure conversion (no socket
    is opened), and formatting in Python instead costs 4-10x as much (1 us against 4-12 us per
    IPv6 address, a tenth of the whole apply at N=1000)."""
    if family == 4:
        return socket.inet_ntop(socket.AF_INET, value.to_bytes(4, "big"))
    return socket.inet_ntop(socket.AF_INET6, value.to_bytes(16, "big"))


def _address(match: AddressMatch) -> str:
    """A prefix, a range, or one plain address when it covers one (as a hash key needs)."""
    if isinstance(match, AddressRange):
        family = match.first.version
        first = _ip_text(int(match.first), family)
        return (
            first if match.first == match.last else f"{first}-{_ip_text(int(match.last), family)}"
        )
    address = _ip_text(int(match.network_address), match.version)
    return address if match.prefixlen == match.max_prefixlen else f"{address}/{match.prefixlen}"


def _ports(ports: PortRange | None) -> str:
    assert ports is not None
    return str(ports.first) if ports.first == ports.last else f"{ports.first}-{ports.last}"


def _number(value: int | None) -> str:
    assert value is not None
    return str(value)


def _addr(match: AddressMatch | None) -> str:
    assert match is not None
    return _address(match)


#: Text of each selector field as nft wants it (one lookup per field: this runs per element).
_FIELD_TEXT: dict[str, Callable[[Selector], str]] = {
    "sa": lambda sel: _addr(sel.src_addr),
    "da": lambda sel: _addr(sel.dst_addr),
    "pr": lambda sel: _number(sel.next_header),
    "sp": lambda sel: _ports(sel.src_port),
    "dp": lambda sel: _ports(sel.dst_port),
    "ds": lambda sel: _number(sel.dscp),
    "fl": lambda sel: _number(sel.flow_label),
}


def _value(field: str, rule: FlowRule) -> str:
    return _FIELD_TEXT[field](rule.selector)


def comment(rule: FlowRule) -> str:
    """Policy id, priority and the form of each address ('n' prefix, 'r' range, '-' none).

    The form is kept because a range that happens to be a prefix is listed as a prefix.
    """
    if not _POLICY_ID.fullmatch(rule.policy_id):
        raise ValueError(f"policy id {rule.policy_id!r} cannot be written into an nft comment")
    sel = rule.selector
    return f"{rule.policy_id} {rule.priority} {_form(sel.src_addr)}{_form(sel.dst_addr)}"


def _form(match: AddressMatch | None) -> str:
    return "-" if match is None else "r" if isinstance(match, AddressRange) else "n"


def verdict(rule: FlowRule) -> str:
    """Where a matching packet goes: its BID's marking chain, or drop."""
    return "drop" if rule.bid is None else f"goto {bid_chain(rule.bid)}"


def element(rule: FlowRule, shape: tuple[str, ...], *, with_data: bool = True) -> str:
    """One map element: the concatenated key, and (for adds) comment and verdict."""
    sel = rule.selector
    key = " . ".join([_FIELD_TEXT[field](sel) for field in shape])
    if not with_data:
        return key
    return f'{key} comment "{comment(rule)}" : {verdict(rule)}'


def plain_rule(table: str, rule: FlowRule, shape: tuple[str, ...]) -> str:
    """A rule matching field by field, for shapes a map cannot hold."""
    matches = [f"meta nfproto {FAMILY_NAMES[rule.family]}"]
    matches += [f"{_expr(field, rule.family)} {_value(field, rule)}" for field in shape]
    body = " ".join(matches)
    return (
        f'add rule inet {table} {CLASSIFY_CHAIN} {body} {verdict(rule)} comment "{comment(rule)}"'
    )


def bid_chain_command(table: str, bid: int, settings: NodeSettings) -> str:
    """The marking chain of `bid`: set our mark bits only, keep the others, accept."""
    keep = ~settings.mark_mask & 0xFFFFFFFF
    mark = settings.mark_of(bid)
    return (
        f"add chain inet {table} {bid_chain(bid)} "
        f"{{ meta mark set meta mark and {keep:#010x} or {mark:#010x} ; accept ; }}"
    )


def element_commands(
    table: str, name: str, shape: tuple[str, ...], rules: Iterable[FlowRule], verb: str
) -> list[str]:
    """`add element` / `delete element` for many rules in one command (empty: no command)."""
    items = [element(r, shape, with_data=verb == "add") for r in rules]
    if not items:
        return []
    return [f"{verb} element inet {table} {name} {{ {', '.join(items)} }}"]


def layer_commands(table: str, index: int, layer: Layer) -> list[str]:
    """The maps, their elements and lookup rules; or the plain rule of a linear layer."""
    if not layer.is_map:
        return [plain_rule(table, rule, layer.shape) for rule in layer.rules]
    family = layer.family
    commands = []
    for part in map_parts(index, layer):
        key_type = " . ".join(
            _ADDR_TYPE[family] if f in ("sa", "da") else _TYPES[f] for f in part.key
        )
        key = " . ".join(_expr(field, family) for field in part.key)
        guard = "" if part.guard is None else f"{_expr('ds', family)} {part.guard} "
        flags = "" if layer.exact else " flags interval ;"
        commands += [
            f"add map inet {table} {part.name} {{ type {key_type} : verdict ;{flags} }}",
            *element_commands(table, part.name, part.key, part.rules, "add"),
            f"add rule inet {table} {CLASSIFY_CHAIN} meta nfproto {FAMILY_NAMES[family]} "
            f"{guard}{key} vmap @{part.name}",
        ]
    return commands


def table_commands(layers: tuple[Layer, ...], settings: NodeSettings) -> list[str]:
    """Replace the whole table in one batch (add+delete first, so it works when absent)."""
    table = table_name(settings)
    bids = sorted({r.bid for layer in layers for r in layer.rules if r.bid is not None})
    commands = [
        f"add table inet {table}",
        f"delete table inet {table}",
        f"add table inet {table}",
        *(bid_chain_command(table, bid, settings) for bid in bids),
        f"add chain inet {table} {CLASSIFY_CHAIN}",
    ]
    for index, layer in enumerate(layers):
        commands += layer_commands(table, index, layer)
    for chain, kind in (("prerouting", "filter"), ("output", "route")):
        commands.append(
            f"add chain inet {table} {chain} {{ type {kind} hook {chain} priority mangle ; "
            f"policy accept ; jump {CLASSIFY_CHAIN} ; }}"
        )
    return commands


def parse_address(family: int, low: int, high: int, form: str) -> AddressMatch:
    """Rebuild an address selector from its bounds and the form kept in the comment."""
    make = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    if form == "r":
        return AddressRange(first=make(low), last=make(high))
    bits = 32 if family == 4 else 128
    length = bits - (high - low + 1).bit_length() + 1
    if family == 4:
        return ipaddress.IPv4Network((low, length))
    return ipaddress.IPv6Network((low, length))
