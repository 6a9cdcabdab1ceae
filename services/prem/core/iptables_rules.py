"""The iptables back end's rule codec: flow rules as xtables rules of our main chain, and back.

Each rule carries `-m comment --comment "<policy id> <priority>[ +flags]"` so that `read` can
rebuild the flow table from the kernel alone. The flags record selector fields whose kernel form
is a no-op and would otherwise vanish: `+src`/`+dst` for a /0 prefix, `+sport`/`+dport` for the
port range 0-65535 (which the tcp and udp matches do not store).

Selectors: prefixes with `-s/-d`, ranges with `iprange`, ports with the tcp, udp, sctp or dccp
match (xtables has no udplite match: UDP-Lite ports use `multiport`), DSCP with `dscp`, and the
IPv6 flow label with `u32` on the first word of the IPv6 header (xt_u32 works for both families).
Next header 0 is refused: `-p 0` means "any protocol" to xtables.

Rendering (`FlowRule` to `RuleSpec`) and parsing (`RuleSpec` to `FlowRule`) are pure code;
`backends.iptc_rules` converts between a `RuleSpec` and a python-iptables rule object.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from services.contracts.errors import KernelError
from services.contracts.policy import AddressMatch, AddressRange, PortRange, Selector
from services.prem.core.flowtable import FlowRule, FlowTable
from services.prem.core.settings import NodeSettings

log = logging.getLogger(__name__)

FAMILIES = (4, 6)
ALL_PORTS = PortRange(first=0, last=65535)
#: Port protocols and the xtables match holding their ports.
PORT_MATCHES = {6: "tcp", 17: "udp", 33: "dccp", 132: "sctp", 136: "multiport"}
FLOW_LABEL_MASK = 0xFFFFF
_U32_FLOW_LABEL = re.compile(r"^(?:0x)?0&0xfffff=0x([0-9a-f]+)$")

Params = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class RuleSpec:
    """One xtables rule as plain data: what `make_rule` writes and `capture` reads back."""

    src: str | None = None
    dst: str | None = None
    protocol: int | None = None
    matches: tuple[tuple[str, Params], ...] = ()
    target: str = ""
    target_params: Params = ()
    goto: bool = False
    inverted: bool = False


# -- chain names ---------------------------------------------------------------------------


def main_chain(settings: NodeSettings) -> str:
    """Our main chain, `<PREFIX>_PREM`, in both families."""
    return f"{settings.name_prefix.upper()}_PREM"


def subchain(chain: str, bid: int) -> str:
    """The chain that marks packets for `bid`, named after our main chain `chain`."""
    return f"{chain}_{bid}"


# -- rendering (pure) ----------------------------------------------------------------------


def render(
    table: FlowTable, family: int, settings: NodeSettings
) -> tuple[tuple[RuleSpec, ...], dict[int, int]]:
    """The main-chain rules of `family` and the mark of each BID used; refuses the unsayable."""
    chain = main_chain(settings)
    specs: list[RuleSpec] = []
    marks: dict[int, int] = {}
    for rule in table:
        if rule.family not in FAMILIES:
            raise KernelError("iptables render", f"unknown address family {rule.family}")
        if rule.family != family:
            continue
        if rule.bid is not None and rule.bid not in marks:
            mark = settings.mark_of(rule.bid)
            if mark == 0 or (mark >> settings.mark_shift) != rule.bid:
                raise KernelError(
                    "iptables render",
                    f"policy {rule.policy_id!r}: BID {rule.bid} does not fit in mark_mask "
                    f"{settings.mark_mask:#010x}",
                )
            marks[rule.bid] = mark
        specs.append(render_rule(rule, chain))
    return tuple(specs), marks


def render_rule(rule: FlowRule, chain: str) -> RuleSpec:
    """One flow rule as an xtables rule of our main chain `chain`."""
    sel = rule.selector
    flags: list[str] = []
    matches: list[tuple[str, Params]] = []
    src = _prefix(sel.src_addr, "src", flags, matches)
    dst = _prefix(sel.dst_addr, "dst", flags, matches)
    if sel.next_header == 0:
        raise KernelError(
            "iptables render",
            f"policy {rule.policy_id!r}: next header 0 means any protocol to xtables; "
            "use the nftables back end",
        )
    matches.extend(_port_matches(sel, flags))
    if sel.dscp is not None:
        matches.append(("dscp", (("dscp", str(sel.dscp)),)))
    if sel.flow_label is not None:
        if rule.family != 6:
            raise KernelError("iptables render", f"policy {rule.policy_id!r}: IPv4 flow label")
        matches.append(("u32", (("u32", f"0&{FLOW_LABEL_MASK:#x}={sel.flow_label:#x}"),)))
    comment = " ".join([rule.policy_id, str(rule.priority), *flags])
    matches.append(("comment", (("comment", comment),)))
    if rule.bid is None:
        return RuleSpec(src, dst, sel.next_header, tuple(matches), "DROP")
    return RuleSpec(src, dst, sel.next_header, tuple(matches), subchain(chain, rule.bid), goto=True)


def mark_spec(mark: int, settings: NodeSettings) -> RuleSpec:
    """The only rule of a BID subchain."""
    value = f"{mark:#x}/{settings.mark_mask:#x}"
    return RuleSpec(target="MARK", target_params=(("set-xmark", value),))


# -- parsing (pure) ------------------------------------------------------------------------


def parse_rule(
    spec: RuleSpec, family: int, bids: dict[str, int], settings: NodeSettings
) -> FlowRule | None:
    """The flow rule an xtables rule of our main chain stands for; None when foreign."""
    try:
        bid = _verdict(spec, bids)
        found, ranges = _collect(spec.matches)
        policy_id, priority, flags = _comment(found)
        fields = _addresses(spec, family, ranges, flags)
        if spec.protocol is not None:
            fields["next_header"] = spec.protocol
            fields.update(_ports(spec.protocol, found, flags))
        if "dscp" in found:
            fields["dscp"] = int(dict(found.pop("dscp"))["dscp"], 0)
        if "u32" in found:
            matched = _U32_FLOW_LABEL.match(dict(found.pop("u32"))["u32"].lower())
            if matched is None:
                raise _ForeignRuleError("u32 match other than the flow label")
            fields["flow_label"] = int(matched.group(1), 16)
        if found:
            raise _ForeignRuleError(f"unexpected matches {sorted(found)}")
        return FlowRule(priority, policy_id, family, Selector(**fields), bid)
    except (ValueError, KeyError) as exc:
        log.warning(
            "%s: rule in %s is not ours (%s): %s", settings.node, main_chain(settings), exc, spec
        )
        return None


def parse_mark(specs: Sequence[RuleSpec], settings: NodeSettings) -> int | None:
    """The BID a subchain marks with, or None when it is not exactly one MARK of ours."""
    if len(specs) != 1:
        return None
    spec = specs[0]
    if spec.target != "MARK" or spec.src or spec.dst or spec.matches or spec.protocol:
        return None
    value = dict(spec.target_params).get("set-xmark", "")
    try:
        mark, mask = (int(part, 0) for part in value.split("/"))
    except ValueError:
        return None
    if mask != settings.mark_mask or mark & ~mask or mark == 0:
        return None
    return mark >> settings.mark_shift


# -- helpers -------------------------------------------------------------------------------


class _ForeignRuleError(ValueError):
    """A rule in our chain that does not have the form we write."""


def _verdict(spec: RuleSpec, bids: dict[str, int]) -> int | None:
    """The BID of a goto into one of our subchains, None for DROP; anything else is foreign."""
    if spec.inverted:
        raise _ForeignRuleError("inverted match")
    if spec.goto and spec.target in bids:
        return bids[spec.target]
    if spec.target == "DROP" and not spec.goto:
        return None
    raise _ForeignRuleError(f"target {spec.target}")


def _collect(matches: Iterable[tuple[str, Params]]) -> tuple[dict[str, Params], dict[str, str]]:
    """Matches by name (multiport parts merged) and the iprange parameters."""
    found: dict[str, Params] = {}
    ranges: dict[str, str] = {}
    for name, params in matches:
        if name == "iprange":
            ranges.update(params)
        elif name == "multiport":
            found["multiport"] = found.get("multiport", ()) + params
        elif name in found:
            raise _ForeignRuleError(f"match {name} twice")
        else:
            found[name] = params
    return found, ranges


def _comment(found: dict[str, Params]) -> tuple[str, int, set[str]]:
    """Policy id, priority and flags from our comment (removed from `found`)."""
    words = dict(found.pop("comment", ())).get("comment", "").split()
    if len(words) < 2 or not words[1].isdigit():
        raise _ForeignRuleError("no policy comment")
    return words[0], int(words[1]), set(words[2:])


def _addresses(
    spec: RuleSpec, family: int, ranges: dict[str, str], flags: set[str]
) -> dict[str, Any]:
    """Selector address fields from `-s/-d`, iprange and the /0 flags."""
    fields: dict[str, Any] = {}
    for side, address in (("src", spec.src), ("dst", spec.dst)):
        text = ranges.pop(f"{side}-range", None)
        if text is not None:
            first, last = text.split("-")
            fields[f"{side}_addr"] = AddressRange(
                first=ipaddress.ip_address(first), last=ipaddress.ip_address(last)
            )
        elif address is not None:
            fields[f"{side}_addr"] = ipaddress.ip_network(address)
        elif f"+{side}" in flags:
            fields[f"{side}_addr"] = ipaddress.ip_network("::/0" if family == 6 else "0.0.0.0/0")
    if ranges:
        raise _ForeignRuleError(f"iprange options {sorted(ranges)}")
    return fields


def _ports(protocol: int, found: dict[str, Params], flags: set[str]) -> dict[str, PortRange]:
    """Selector port fields from the protocol's port match (removed from `found`)."""
    name = PORT_MATCHES.get(protocol)
    ports = dict(found.pop(name, ())) if name else {}
    fields: dict[str, PortRange] = {}
    for side, field in (("sport", "src_port"), ("dport", "dst_port")):
        text = ports.pop(side, None) or ports.pop(f"{side}s", None)
        if text is not None:
            fields[field] = _port_range(text)
        elif f"+{side}" in flags:
            fields[field] = ALL_PORTS
    if ports:
        raise _ForeignRuleError(f"port options {sorted(ports)}")
    return fields


def _prefix(
    match: AddressMatch | None, side: str, flags: list[str], matches: list[tuple[str, Params]]
) -> str | None:
    """`-s/-d` text for a prefix, or an iprange match for a range (appended to `matches`)."""
    if match is None:
        return None
    if isinstance(match, AddressRange):
        matches.append(("iprange", ((f"{side}-range", f"{match.first}-{match.last}"),)))
        return None
    if match.prefixlen == 0:
        flags.append(f"+{side}")
        return None
    return str(match)


def _port_matches(sel: Selector, flags: list[str]) -> list[tuple[str, Params]]:
    """The port match of the selector's protocol; multiport (UDP-Lite) takes one side each."""
    sides = [("sport", sel.src_port), ("dport", sel.dst_port)]
    present = [(key, ports) for key, ports in sides if ports is not None]
    if not present or sel.next_header is None:
        return []
    flags.extend(f"+{key}" for key, ports in present if ports == ALL_PORTS)
    name = PORT_MATCHES[sel.next_header]
    text = [(key, _port_text(ports)) for key, ports in present]
    if name == "multiport":
        return [("multiport", ((f"{key}s", value),)) for key, value in text]
    return [(name, tuple(text))]


def _port_text(ports: PortRange) -> str:
    """`first:last`, or one port alone (multiport refuses a range `7:7`)."""
    return str(ports.first) if ports.first == ports.last else f"{ports.first}:{ports.last}"


def _port_range(text: str) -> PortRange:
    first, _, last = text.partition(":")
    return PortRange(first=int(first), last=int(last or first))
