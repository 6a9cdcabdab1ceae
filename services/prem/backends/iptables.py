"""The iptables back end: flow rules as mangle-table rules through libiptc (python-iptables).

Layout, per address family (`iptables` for IPv4, `ip6tables` for IPv6, both legacy xtables):

* `<PREFIX>_PREM`: one rule per flow rule, in precedence order. A forward rule *goes to*
  (`-g`, not `-j`) the BID's subchain, a drop rule ends in DROP. With goto, the end of the
  subchain returns straight to PREROUTING/OUTPUT, so the first matching rule wins, as in
  `flowtable.classify`, with one rule per policy and no extra mark test.
* `<PREFIX>_PREM_<bid>`: a single `MARK --set-xmark <mark>/<mask>` rule; only our mark bits
  change. `read` takes the BID from this mark, not from the chain name.
* One jump to `<PREFIX>_PREM` at the top of PREROUTING (forwarded packets) and of OUTPUT (local
  ones). A family without its two jumps enforces nothing, and `read` says so.

Each rule carries `-m comment --comment "<policy id> <priority>[ +flags]"` so that `read` can
rebuild the flow table from the kernel alone. The flags record selector fields whose kernel form
is a no-op and would otherwise vanish: `+src`/`+dst` for a /0 prefix, `+sport`/`+dport` for the
port range 0-65535 (which the tcp and udp matches do not store).

Selectors: prefixes with `-s/-d`, ranges with `iprange`, ports with the tcp, udp, sctp or dccp
match (xtables has no udplite match: UDP-Lite ports use `multiport`), DSCP with `dscp`, and the
IPv6 flow label with `u32` on the first word of the IPv6 header (xt_u32 works for both families).
Next header 0 is refused: `-p 0` means "any protocol" to xtables.

Atomicity: libiptc replaces a whole table on commit, so each family gets exactly one commit per
`apply`, and only when its content changes. Both tables are built in memory before either is
committed; if the second commit fails, the first is rebuilt from what was read before `apply`
and committed again. The remaining gap: if that restoring commit fails too, the two families
disagree until the next reconciliation, and the error says so.

Cost: rules are matched linearly (about 20-30 ns per rule per packet, see KERNEL.md); an ipset
or nft map would make it O(1). Good enough for this first version; prefer the nftables back end
for large tables.

python-iptables keeps one libiptc snapshot per table per process: every operation refreshes
first, and another writer must not change the same table between our refresh and commit.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import iptc

from services.contracts.errors import KernelError
from services.contracts.policy import AddressMatch, AddressRange, PortRange, Selector
from services.prem.config import PremSettings
from services.prem.flowtable import FlowRule, FlowTable
from services.prem.reconcile import Changes

log = logging.getLogger(__name__)

FAMILIES = (4, 6)
HOOKS = ("PREROUTING", "OUTPUT")
ALL_PORTS = PortRange(first=0, last=65535)
#: Port protocols and the xtables match holding their ports.
PORT_MATCHES = {6: "tcp", 17: "udp", 33: "dccp", 132: "sctp", 136: "multiport"}
FLOW_LABEL_MASK = 0xFFFFF
_U32_FLOW_LABEL = re.compile(r"^0x0&0xfffff=0x([0-9a-f]+)$")

Params = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class RuleSpec:
    """One xtables rule as plain data: what `_install` writes and `_capture` reads back."""

    src: str | None = None
    dst: str | None = None
    protocol: int | None = None
    matches: tuple[tuple[str, Params], ...] = ()
    target: str = ""
    target_params: Params = ()
    goto: bool = False
    inverted: bool = False


@dataclass(frozen=True)
class FamilyState:
    """What one family's table holds of ours: the rules read, and whether it is exactly ours.

    `clean` is False when something is present that `read` cannot express as a flow table (a
    missing jump, a foreign or malformed rule in our chains, rules out of precedence order), so
    that the next `apply` rewrites the family even when the rules read equal the desired ones.
    """

    rules: tuple[FlowRule, ...]
    clean: bool
    owned: bool


class IptablesBackend:
    """Flow rules as legacy-xtables mangle rules, written with one libiptc commit per family."""

    name = "iptables"

    def __init__(self, settings: PremSettings) -> None:
        self.settings = settings
        self.chain = f"{settings.name_prefix.upper()}_PREM"
        self._sub = re.compile(rf"^{re.escape(self.chain)}_(\d+)$")

    # -- Backend protocol ------------------------------------------------------------------

    def read(self) -> FlowTable:
        """The flow rules both families enforce now, from the kernel, in precedence order."""
        rules: list[FlowRule] = []
        for family in FAMILIES:
            rules.extend(self.read_family(family).rules)
        return tuple(sorted(rules, key=FlowRule.precedence))

    def apply(self, desired: FlowTable, changes: Changes) -> None:
        """Rewrite our chains to `desired`: one commit per family whose content changes."""
        if not changes:
            return
        wanted = {family: self.render(desired, family) for family in FAMILIES}
        tables = {family: _table(family) for family in FAMILIES}
        before: dict[int, FamilyState] = {}
        pending: list[int] = []
        try:
            for family in FAMILIES:
                before[family] = self.read_family(family)
                subset = tuple(r for r in desired if r.family == family)
                if before[family].clean and before[family].rules == subset:
                    continue
                pending.append(family)
                self._build(tables[family], wanted[family])
        except KernelError:
            _discard(tables.values())
            raise
        except Exception as exc:
            _discard(tables.values())
            raise KernelError("iptables apply", f"building the rules failed: {exc}") from exc
        done: list[int] = []
        for family in pending:
            try:
                self._commit(family, tables[family])
            except Exception as exc:
                _discard(tables.values())
                self._restore(done, before)
                raise KernelError(
                    "iptables apply", f"commit of the IPv{family} mangle table failed: {exc}"
                ) from exc
            done.append(family)
        log.debug("applied %d rules to families %s", len(desired), pending)

    def remove_all(self) -> None:
        """Remove our jumps and chains from both families (absent is success)."""
        tables = {family: _table(family) for family in FAMILIES}
        for family, table in tables.items():
            try:
                table.refresh()
                if self._build(table, None):
                    self._commit(family, table)
            except KernelError:
                _discard(tables.values())
                raise
            except Exception as exc:
                _discard(tables.values())
                raise KernelError("iptables remove", f"IPv{family}: {exc}") from exc

    # -- rendering (pure) ------------------------------------------------------------------

    def render(self, table: FlowTable, family: int) -> tuple[tuple[RuleSpec, ...], dict[int, int]]:
        """The main-chain rules of `family` and the mark of each BID used; refuses the unsayable."""
        specs: list[RuleSpec] = []
        marks: dict[int, int] = {}
        for rule in table:
            if rule.family not in FAMILIES:
                raise KernelError("iptables render", f"unknown address family {rule.family}")
            if rule.family != family:
                continue
            if rule.bid is not None and rule.bid not in marks:
                mark = self.settings.mark_of(rule.bid)
                if mark == 0 or (mark >> self.settings.mark_shift) != rule.bid:
                    raise KernelError(
                        "iptables render",
                        f"policy {rule.policy_id!r}: BID {rule.bid} does not fit in mark_mask "
                        f"{self.settings.mark_mask:#010x}",
                    )
                marks[rule.bid] = mark
            specs.append(self.render_rule(rule))
        return tuple(specs), marks

    def render_rule(self, rule: FlowRule) -> RuleSpec:
        """One flow rule as an xtables rule of our main chain."""
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
        return RuleSpec(src, dst, sel.next_header, tuple(matches), self.subchain(rule.bid), goto=True)

    def subchain(self, bid: int) -> str:
        """The chain that marks packets for `bid`."""
        return f"{self.chain}_{bid}"

    def mark_spec(self, mark: int) -> RuleSpec:
        """The only rule of a BID subchain."""
        value = f"{mark:#x}/{self.settings.mark_mask:#x}"
        return RuleSpec(target="MARK", target_params=(("set-xmark", value),))

    # -- parsing (pure) --------------------------------------------------------------------

    def parse_rule(self, spec: RuleSpec, family: int, bids: dict[str, int]) -> FlowRule | None:
        """The flow rule an xtables rule of our main chain stands for; None when foreign."""
        if spec.inverted:
            return None
        if spec.goto and spec.target in bids:
            bid: int | None = bids[spec.target]
        elif spec.target == "DROP" and not spec.goto:
            bid = None
        else:
            return None
        fields: dict[str, Any] = {}
        found: dict[str, Params] = {}
        ranges: dict[str, str] = {}
        for name, params in spec.matches:
            if name == "iprange":
                ranges.update((key, value) for key, value in params)
            elif name == "multiport":
                for key, value in params:
                    found.setdefault("multiport", ())
                    found["multiport"] += ((key, value),)
            elif name in found:
                return None
            else:
                found[name] = params
        comment = dict(found.pop("comment", ())).get("comment")
        if comment is None:
            return None
        words = comment.split()
        if len(words) < 2 or not words[1].isdigit():
            return None
        policy_id, priority, flags = words[0], int(words[1]), set(words[2:])
        try:
            for side, key in (("src", "src-range"), ("dst", "dst-range")):
                address = spec.src if side == "src" else spec.dst
                if key in ranges:
                    first, last = ranges.pop(key).split("-")
                    fields[f"{side}_addr"] = AddressRange(
                        first=ipaddress.ip_address(first), last=ipaddress.ip_address(last)
                    )
                elif address is not None:
                    fields[f"{side}_addr"] = ipaddress.ip_network(address)
                elif f"+{side}" in flags:
                    fields[f"{side}_addr"] = ipaddress.ip_network("::/0" if family == 6 else "0/0")
            if ranges:
                return None
            if spec.protocol is not None:
                fields["next_header"] = spec.protocol
                port_match = PORT_MATCHES.get(spec.protocol)
                ports = dict(found.pop(port_match, ())) if port_match else {}
                for side in ("sport", "dport"):
                    text = ports.pop(side, None) or ports.pop(f"{side}s", None)
                    if text is not None:
                        fields[f"{side[0]}rc_port" if side == "sport" else "dst_port"] = (
                            _port_range(text)
                        )
                    elif f"+{side}" in flags:
                        fields["src_port" if side == "sport" else "dst_port"] = ALL_PORTS
                if ports:
                    return None
            if "dscp" in found:
                fields["dscp"] = int(dict(found.pop("dscp"))["dscp"], 0)
            if "u32" in found:
                matched = _U32_FLOW_LABEL.match(dict(found.pop("u32"))["u32"].lower())
                if matched is None:
                    return None
                fields["flow_label"] = int(matched.group(1), 16)
            if found:
                return None
            selector = Selector(**fields)
        except (ValueError, KeyError):
            return None
        return FlowRule(priority, policy_id, family, selector, bid)

    def parse_mark(self, specs: Sequence[RuleSpec]) -> int | None:
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
        if mask != self.settings.mark_mask or mark & ~mask or mark == 0:
            return None
        return mark >> self.settings.mark_shift

    # -- kernel edge -----------------------------------------------------------------------

    def read_family(self, family: int) -> FamilyState:
        """Read and parse our chains of one family (refreshing the libiptc snapshot first)."""
        table = _table(family)
        try:
            table.refresh()
            return self._parse_table(table, family)
        except Exception as exc:
            raise KernelError("iptables read", f"IPv{family} mangle table: {exc}") from exc

    def _parse_table(self, table: Any, family: int) -> FamilyState:
        chains = _chain_names(table)
        subchains = [name for name in chains if self._sub.match(name)]
        owned = self.chain in chains or bool(subchains) or any(self._jumps(table))
        if self.chain not in chains:
            return FamilyState((), not owned, owned)
        clean = all(len(self._jumps(table)[hook]) == 1 for hook in HOOKS)
        bids: dict[str, int] = {}
        for name in subchains:
            bid = self.parse_mark(_capture_chain(table, name, family))
            if bid is None or name != self.subchain(bid):
                clean = False
            if bid is not None:
                bids[name] = bid
        if not all(self._jumps(table)[hook] for hook in HOOKS):
            return FamilyState((), False, owned)
        rules: list[FlowRule] = []
        for spec in _capture_chain(table, self.chain, family):
            rule = self.parse_rule(spec, family, bids)
            if rule is None:
                clean = False
            else:
                rules.append(rule)
        ordered = sorted(rules, key=FlowRule.precedence)
        if rules != ordered or set(bids.values()) != {r.bid for r in rules if r.bid is not None}:
            clean = False
        return FamilyState(tuple(ordered), clean, owned)

    def _jumps(self, table: Any) -> dict[str, list[Any]]:
        """Our jump rules in each hook chain (iptc rules, to delete by)."""
        found: dict[str, list[Any]] = {}
        for hook in HOOKS:
            found[hook] = [
                rule
                for rule in iptc.Chain(table, hook).rules
                if str(rule.target.name) == self.chain
            ]
        return found

    def _build(
        self, table: Any, wanted: tuple[tuple[RuleSpec, ...], dict[int, int]] | None
    ) -> bool:
        """Rewrite our chains in the (uncommitted) snapshot; None or no rules removes them.

        Returns whether the snapshot changed. The caller commits or discards.
        """
        family = 6 if isinstance(table, iptc.Table6) else 4
        chains = _chain_names(table)
        ours = [name for name in chains if name == self.chain or self._sub.match(name)]
        jumps = self._jumps(table)
        if wanted is None or not wanted[0]:
            if not ours and not any(jumps.values()):
                return False
            for hook, rules in jumps.items():
                for rule in rules:
                    iptc.Chain(table, hook).delete_rule(rule)
            for name in ours:
                table.flush_entries(name)
            for name in ours:
                table.delete_chain(name)
            return True
        specs, marks = wanted
        for name in ours:
            table.flush_entries(name)
        keep = {self.subchain(bid) for bid in marks}
        for name in ours:
            if name != self.chain and name not in keep:
                table.delete_chain(name)
        for name in [self.chain, *sorted(keep)]:
            if name not in chains:
                table.create_chain(name)
        for bid, mark in marks.items():
            _append(table, self.subchain(bid), self.mark_spec(mark), family)
        for spec in specs:
            _append(table, self.chain, spec, family)
        for hook in HOOKS:
            for extra in jumps[hook][1:]:
                iptc.Chain(table, hook).delete_rule(extra)
            if not jumps[hook]:
                rule = _new_rule(family)
                rule.create_target(self.chain)
                iptc.Chain(table, hook).insert_rule(rule, 0)
        return True

    def _commit(self, family: int, table: Any) -> None:
        """Write the snapshot of one family to the kernel (a separate method: tests fail it)."""
        table.commit()
        table.refresh()

    def _restore(self, done: Iterable[int], before: dict[int, FamilyState]) -> None:
        """Put back the families already committed by a failed `apply`, from what was read."""
        for family in done:
            table = _table(family)
            try:
                table.refresh()
                rules = before[family].rules
                self._build(table, self.render(rules, family) if rules else None)
                self._commit(family, table)
            except Exception as exc:
                _discard([table])
                raise KernelError(
                    "iptables apply",
                    f"a commit failed and restoring IPv{family} failed too ({exc}); "
                    "the families disagree until the next apply",
                ) from exc


# -- helpers around the untyped python-iptables API -----------------------------------------


def _table(family: int) -> Any:
    """The process-wide mangle table of `family`, in manual-commit mode."""
    if family == 6:
        return iptc.Table6(iptc.Table6.MANGLE, autocommit=False)
    return iptc.Table(iptc.Table.MANGLE, autocommit=False)


def _new_rule(family: int) -> Any:
    return iptc.Rule6() if family == 6 else iptc.Rule()


def _discard(tables: Iterable[Any]) -> None:
    """Drop uncommitted changes: the kernel still holds the last committed state."""
    for table in tables:
        try:
            table.refresh()
        except Exception:  # noqa: BLE001 - already failing; the next refresh retries
            log.exception("discarding the libiptc snapshot failed")


def _chain_names(table: Any) -> list[str]:
    return [str(chain.name) for chain in table.chains]


def _append(table: Any, chain: str, spec: RuleSpec, family: int) -> None:
    """Build an iptc rule from `spec` and append it to `chain` (uncommitted)."""
    rule = _new_rule(family)
    if spec.src is not None:
        rule.src = spec.src
    if spec.dst is not None:
        rule.dst = spec.dst
    if spec.protocol is not None:
        rule.protocol = str(spec.protocol)
    for name, params in spec.matches:
        match = rule.create_match(name)
        for key, value in params:
            match.set_parameter(key, value)
    target = rule.create_target(spec.target, goto=spec.goto)
    for key, value in spec.target_params:
        target.set_parameter(key, value)
    iptc.Chain(table, chain).append_rule(rule)


def _capture_chain(table: Any, chain: str, family: int) -> list[RuleSpec]:
    return [_capture(rule, family) for rule in iptc.Chain(table, chain).rules]


def _capture(rule: Any, family: int) -> RuleSpec:
    """An iptc rule as plain data; `-s/-d` of 0/0 are absent, the protocol is a number."""
    ip = rule.entry.ipv6 if family == 6 else rule.entry.ip
    inverted = int(ip.invflags) != 0 or "!" in str(rule.src) or "!" in str(rule.dst)
    src, dst = str(rule.src), str(rule.dst)
    proto = int(ip.proto)
    matches = tuple(
        (str(m.name), tuple((str(k), " ".join(map(str, v))) for k, v in m.get_all_parameters().items()))
        for m in rule.matches
    )
    target = rule.target
    return RuleSpec(
        src=None if _is_any(src) else src,
        dst=None if _is_any(dst) else dst,
        protocol=proto or None,
        matches=matches,
        target=str(target.name),
        target_params=tuple(
            (str(k), " ".join(map(str, v))) for k, v in target.get_all_parameters().items()
        ),
        goto=bool(target.goto),
        inverted=inverted,
    )


def _is_any(address: str) -> bool:
    return address.endswith(("/0", "/0.0.0.0", "/::"))


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
    text = [(key, f"{ports.first}:{ports.last}") for key, ports in present]
    if name == "multiport":
        return [("multiport", ((f"{key}s", value),)) for key, value in text]
    return [(name, tuple(text))]


def _port_range(text: str) -> PortRange:
    first, _, last = text.partition(":")
    return PortRange(first=int(first), last=int(last or first))
