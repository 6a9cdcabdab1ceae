"""The iptables back end: flow rules as mangle-table rules through libiptc (python-iptables).

Layout, per address family (`iptables` for IPv4, `ip6tables` for IPv6, both legacy xtables):

* `<PREFIX>_PREM`: one rule per flow rule, in precedence order. A forward rule *goes to*
  (`-g`, not `-j`) the BID's subchain, a drop rule ends in DROP. With goto, the end of the
  subchain returns straight to PREROUTING/OUTPUT, so the first matching rule wins, as in
  `core.flowtable.classify`, with one rule per policy and no extra mark test.
* `<PREFIX>_PREM_<bid>`: a single `MARK --set-xmark <mark>/<mask>` rule; only our mark bits
  change. `read` takes the BID from this mark, not from the chain name.
* One jump to `<PREFIX>_PREM` at the top of PREROUTING (forwarded packets) and of OUTPUT (local
  ones). A family without its two jumps enforces nothing, and `read` says so.

The rule format (policy comments, flags, selectors) and its conversion to and from flow
rules are in `core.iptables_rules` (pure), the python-iptables objects in `iptc_rules`.

Atomicity: libiptc replaces a whole table on commit, so each family gets exactly one commit per
`apply`, and only when its content changes. A family that holds exactly our rules is edited in
place (only the rules that differ are deleted or inserted: building one iptc rule costs a
fraction of a millisecond, and untouched rules keep their counters); anything else in our chains
(a foreign rule, a missing jump, a wrong mark) makes `apply` rewrite the family's chains whole.
Both tables are built in memory before either is committed; if the second commit fails, the
first is rebuilt from what was read before `apply` and committed again. The remaining gap: if
that restoring commit fails too, the two families disagree until the next reconciliation, and
the error says so.

Cost: rules are matched linearly (about 20-30 ns per rule per packet, see docs/kernel.md); an ipset
or nft map would make it O(1). Good enough for this first version; prefer the nftables back end
for large tables.

Balance and duplicate policies (version-2 documents) are refused whole, before anything is
written (`actions`; the enforcer refuses them, and `apply` again as a last guard). xtables
has the pieces: HMARK hashes the 5-tuple into the mark, TEE clones to `--gateway` by
`--oif`; the kernel measured has both (CONFIG_NETFILTER_XT_TARGET_HMARK, _TEE) and
python-iptables writes both (tried in a namespace). But HMARK sets the whole mark
(offset + hash mod N), not only our bits, so balance would need another owner's bits saved
around it, and neither is written here. Priority policies are refused the same way: xtables
could meter with hashlimit and pin flows with CONNMARK, but a per-flow overflow needs the
"tier saturated" state that nft keeps in a timed set, and writing it twice is not worth it
while the nftables back end has it. Use the nftables back end for them.

python-iptables keeps one libiptc snapshot per table per process: every operation refreshes
first, and another writer must not change the same table between our refresh and commit.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import iptc

from services.contracts.errors import KernelError
from services.prem.backends.iptc_rules import capture, make_rule, new_rule
from services.prem.config import PremSettings
from services.prem.core.flowtable import FlowRule, FlowTable
from services.prem.core.iptables_rules import (
    FAMILIES,
    RuleSpec,
    main_chain,
    mark_spec,
    parse_mark,
    parse_rule,
    render,
    render_rule,
    subchain,
)
from services.prem.core.reconcile import Changes

log = logging.getLogger(__name__)

HOOKS = ("PREROUTING", "OUTPUT")


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
    #: The policy actions this back end enforces (the enforcer refuses the others).
    actions = frozenset({"forward", "drop"})

    def __init__(self, settings: PremSettings) -> None:
        self.settings = settings
        self.chain = main_chain(settings)
        self._sub = re.compile(rf"^{re.escape(self.chain)}_(\d+)$")

    # -- Backend protocol ------------------------------------------------------------------

    def read(self) -> FlowTable:
        """The flow rules both families enforce now, from the kernel, in precedence order."""
        rules: list[FlowRule] = []
        for family in FAMILIES:
            rules.extend(self.read_family(family).rules)
        return tuple(sorted(rules, key=FlowRule.precedence))

    def apply_delta(self, changes: Changes) -> bool:
        """Never: a linear chain is rewritten whole per family (`apply`)."""
        return False

    def apply(self, desired: FlowTable, changes: Changes) -> None:
        """Rewrite our chains to `desired`: one commit per family whose content changes."""
        if not changes:
            return
        spread = [r.policy_id for r in desired if r.buckets or r.copies or r.tiers]
        if spread:
            raise KernelError(
                "iptables apply",
                f"the iptables back end cannot enforce balance, duplicate or priority policies "
                f"({', '.join(sorted(set(spread)))}); nothing was changed",
            )
        desired = tuple(sorted(desired, key=FlowRule.precedence))
        wanted = {family: render(desired, family, self.settings) for family in FAMILIES}
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

    # -- the rule codec, bound to our chain and settings -----------------------------------

    def uncopyable(self) -> dict[tuple[int, int], str]:
        """Nothing to say: duplicate policies are refused before they reach the kernel."""
        return {}

    def render_rule(self, rule: FlowRule) -> RuleSpec:
        """One flow rule as an xtables rule of our main chain."""
        return render_rule(rule, self.chain)

    def subchain(self, bid: int) -> str:
        """The chain that marks packets for `bid`."""
        return subchain(self.chain, bid)

    def parse_rule(self, spec: RuleSpec, family: int, bids: dict[str, int]) -> FlowRule | None:
        """The flow rule an xtables rule of our main chain stands for; None when foreign."""
        return parse_rule(spec, family, bids, self.settings)

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
            bid = parse_mark(_capture_chain(table, name, family), self.settings)
            if bid is None or name != self.subchain(bid):
                clean = False
            if bid is not None:
                bids[name] = bid
        if not all(jumps[hook] for hook in HOOKS):
            return FamilyState((), False, owned)
        rules: list[FlowRule] = []
        entries = iptc.Chain(table, self.chain).rules
        for entry in entries:
            rule = parse_rule(capture(entry, family), family, bids, self.settings)
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
                rule = new_rule(_family_of(table))
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
            _append(table, self.subchain(bid), mark_spec(marks[bid], self.settings), family)
        keep = set(desired)
        main = iptc.Chain(table, self.chain)
        for rule, entry in reversed(list(zip(state.rules, state.entries, strict=True))):
            if rule not in keep:
                main.delete_rule(entry)
        present = set(state.rules)
        for position, (rule, spec) in enumerate(zip(desired, specs, strict=True)):
            if rule not in present:
                main.insert_rule(make_rule(spec, family), position)
        for bid in used - set(marks):
            table.flush_entries(self.subchain(bid))
            table.delete_chain(self.subchain(bid))

    def _fill(self, table: Any, specs: tuple[RuleSpec, ...], marks: dict[int, int]) -> None:
        """Append the subchains' MARK rules and the main chain's rules (chains exist, empty)."""
        family = _family_of(table)
        for bid, mark in marks.items():
            _append(table, self.subchain(bid), mark_spec(mark, self.settings), family)
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
                self._build(table, render(rules, family, self.settings) if rules else None)
                self._commit(family, table)
            except Exception as exc:
                _discard([table])
                raise KernelError(
                    "iptables apply",
                    f"a commit failed and restoring IPv{family} failed too ({exc}); "
                    "the families disagree until the next apply",
                ) from exc


# -- table helpers around the untyped python-iptables API ----------------------------------


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
    iptc.Chain(table, chain).append_rule(make_rule(spec, family))


def _capture_chain(table: Any, chain: str, family: int) -> list[RuleSpec]:
    return [capture(rule, family) for rule in iptc.Chain(table, chain).rules]
