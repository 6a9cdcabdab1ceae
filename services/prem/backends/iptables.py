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
`apply`, and only when its content changes. A family that holds exactly our rules is edited in
place (only the rules that differ are deleted or inserted: building one iptc rule costs a
fraction of a millisecond, and untouched rules keep their counters); anything else in our chains
(a foreign rule, a missing jump, a wrong mark) makes `apply` rewrite the family's chains whole.
Both tables are built in memory before either is committed; if the second commit fails, the
first is rebuilt from what was read before `apply` and committed again. The remaining gap: if
that restoring commit fails too, the two families disagree until the next reconciliation, and
the error says so.

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
_U32_FLOW_LABEL = re.compile(r"^(?:0x)?0&0xfffff=0x([0-9a-f]+)$")

Params = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class RuleSpec:
    """One xtables rule as plain data: what `_make_rule` writes and `_capture` reads back."""

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
    #: The main chain's iptc rules, aligned with `rules` when `clean` (valid until a refresh).
    entries: tuple[Any, ...] = ()


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
        desired = tuple(sorted(desired, key=FlowRule.precedence))
        wanted = {family: self.render(desired, family) for family in FAMILIES}
        tables = {family: _table(family) for family in FAMILIES}
        before: dict[int, FamilyState] = {}
        pending: list[int] = []
        try:
            for family in FAMILIES:
                before[family] = self.read_family(family)
                subset = tuple(r for r in desired if r.family == family)
                state = before[family]
                if state.clean and state.rules == subset and (subset or not state.owned):
                    continue
                pending.append(family)
                if state.clean and state.owned and subset:
                    self._edit(tables[family], state, subset, wanted[family])
                else:
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
        log.debug(
            "%s: applied %d rules, rewrote families %s", self.settings.node, len(desired), pending
        )

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
        return RuleSpec(
            src, dst, sel.next_header, tuple(matches), self.subchain(rule.bid), goto=True
        )

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
                "%s: rule in %s is not ours (%s): %s", self.settings.node, self.chain, exc, spec
            )
            return None

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
        jumps = self._jumps(table)
        owned = self.chain in chains or bool(subchains) or any(jumps.values())
        if self.chain not in chains:
            return FamilyState((), not owned, owned)
        clean = all(len(jumps[hook]) == 1 for hook in HOOKS)
        bids: dict[str, int] = {}
        for name in subchains:
            bid = self.parse_mark(_capture_chain(table, name, family))
            if bid is None or name != self.subchain(bid):
                clean = False
            if bid is not None:
                bids[name] = bid
        if not all(jumps[hook] for hook in HOOKS):
            return FamilyState((), False, owned)
        rules: list[FlowRule] = []
        entries = iptc.Chain(table, self.chain).rules
        for entry in entries:
            rule = self.parse_rule(_capture(entry, family), family, bids)
            if rule is None:
                clean = False
            else:
                rules.append(rule)
        ordered = sorted(rules, key=FlowRule.precedence)
        if rules != ordered or set(bids.values()) != {r.bid for r in rules if r.bid is not None}:
            clean = False
        return FamilyState(tuple(ordered), clean, owned, tuple(entries) if clean else ())

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
        for name in ours:
            table.flush_entries(name)
        keep = {self.subchain(bid) for bid in wanted[1]}
        for name in ours:
            if name != self.chain and name not in keep:
                table.delete_chain(name)
        for name in [self.chain, *sorted(keep)]:
            if name not in chains:
                table.create_chain(name)
        self._fill(table, *wanted)
        self._ensure_jumps(table, jumps)
        return True

    def _ensure_jumps(self, table: Any, jumps: dict[str, list[Any]]) -> None:
        """Exactly one jump to our chain per hook, inserted at the top when missing."""
        for hook in HOOKS:
            for extra in jumps[hook][1:]:
                iptc.Chain(table, hook).delete_rule(extra)
            if not jumps[hook]:
                rule = _new_rule(_family_of(table))
                rule.create_target(self.chain)
                iptc.Chain(table, hook).insert_rule(rule, 0)

    def _edit(
        self,
        table: Any,
        state: FamilyState,
        desired: tuple[FlowRule, ...],
        wanted: tuple[tuple[RuleSpec, ...], dict[int, int]],
    ) -> None:
        """Change a clean family in place: delete and insert only the rules that differ.

        Building an iptc rule costs about 0.3 ms, so a one-rule change to a large table is much
        cheaper this way, and untouched rules keep their counters.
        """
        family = _family_of(table)
        specs, marks = wanted
        used = {rule.bid for rule in state.rules if rule.bid is not None}
        for bid in sorted(set(marks) - used):
            table.create_chain(self.subchain(bid))
            _append(table, self.subchain(bid), self.mark_spec(marks[bid]), family)
        keep = set(desired)
        main = iptc.Chain(table, self.chain)
        for rule, entry in reversed(list(zip(state.rules, state.entries, strict=True))):
            if rule not in keep:
                main.delete_rule(entry)
        present = set(state.rules)
        for position, (rule, spec) in enumerate(zip(desired, specs, strict=True)):
            if rule not in present:
                main.insert_rule(_make_rule(spec, family), position)
        for bid in used - set(marks):
            table.flush_entries(self.subchain(bid))
            table.delete_chain(self.subchain(bid))

    def _fill(self, table: Any, specs: tuple[RuleSpec, ...], marks: dict[int, int]) -> None:
        """Append the subchains' MARK rules and the main chain's rules (chains exist, empty)."""
        family = _family_of(table)
        for bid, mark in marks.items():
            _append(table, self.subchain(bid), self.mark_spec(mark), family)
        for spec in specs:
            _append(table, self.chain, spec, family)

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
    try:
        if family == 6:
            return iptc.Table6(iptc.Table6.MANGLE, autocommit=False)
        return iptc.Table(iptc.Table.MANGLE, autocommit=False)
    except Exception as exc:
        raise KernelError("iptables open", f"IPv{family} mangle table: {exc}") from exc


def _family_of(table: Any) -> int:
    return 6 if isinstance(table, iptc.Table6) else 4


def _new_rule(family: int) -> Any:
    return iptc.Rule6() if family == 6 else iptc.Rule()


def _discard(tables: Iterable[Any]) -> None:
    """Drop uncommitted changes: the kernel still holds the last committed state."""
    for table in tables:
        try:
            table.refresh()
        except Exception:  # already failing; the next refresh retries
            log.exception("discarding the libiptc snapshot failed")


def _chain_names(table: Any) -> list[str]:
    return [str(chain.name) for chain in table.chains]


def _append(table: Any, chain: str, spec: RuleSpec, family: int) -> None:
    """Append the rule of `spec` to `chain` (uncommitted)."""
    iptc.Chain(table, chain).append_rule(_make_rule(spec, family))


def _make_rule(spec: RuleSpec, family: int) -> Any:
    """An iptc rule from `spec`."""
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
    return rule


def _capture_chain(table: Any, chain: str, family: int) -> list[RuleSpec]:
    return [_capture(rule, family) for rule in iptc.Chain(table, chain).rules]


def _capture(rule: Any, family: int) -> RuleSpec:
    """An iptc rule as plain data; `-s/-d` of 0/0 are absent, the protocol is a number."""
    ip = rule.entry.ipv6 if family == 6 else rule.entry.ip
    inverted = int(ip.invflags) != 0 or "!" in str(rule.src) or "!" in str(rule.dst)
    src, dst = str(rule.src), str(rule.dst)
    proto = int(ip.proto)
    matches = tuple(
        (
            str(m.name),
            tuple((str(k), " ".join(map(str, v))) for k, v in m.get_all_parameters().items()),
        )
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
