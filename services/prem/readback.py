"""What the kernel enforces, read the way an operator would: `nft -j list table` in a namespace.

For tests and benchmarks that must check the nftables back end's work through a path that does
not share its code (STYLE: read back through an independent reader). It runs the `nft` tool
and walks its JSON; nothing from `backends/` is imported. It understands exactly what those
checks need: the elements of verdict maps and of sets (each carries the policy id in its
comment; a set's verdict is its lookup rule's) and the mark each BID chain sets.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from services import netns
from services.contracts.policy import Forward, Policy


@dataclass(frozen=True, order=True)
class Entry:
    """One verdict-map element: the policy it belongs to, its destination port, its verdict
    (`bid_<n>` for a BID chain, `drop`)."""

    policy_id: str
    port: int | None
    verdict: str


@dataclass(frozen=True)
class TableView:
    """Our table as listed: its verdict-map elements and the mark each BID chain sets."""

    exists: bool
    entries: tuple[Entry, ...]
    marks: Mapping[str, int]

    def by_policy(self) -> dict[str, tuple[Entry, ...]]:
        """Entries grouped by policy id, sorted."""
        grouped: dict[str, list[Entry]] = {}
        for entry in self.entries:
            grouped.setdefault(entry.policy_id, []).append(entry)
        return {pid: tuple(sorted(found)) for pid, found in sorted(grouped.items())}


def read_table(namespace: str, table: str = "multinet_prem") -> TableView:
    """List `inet <table>` in `namespace` with the nft tool (absent table: empty view)."""
    listed = netns.run(namespace, ["nft", "-j", "list", "tables", "inet"])
    names = {item["table"]["name"] for item in json.loads(listed)["nftables"] if "table" in item}
    if table not in names:
        return TableView(False, (), {})
    listing = json.loads(netns.run(namespace, ["nft", "-j", "list", "table", "inet", table]))
    return parse_listing(listing)


def parse_listing(listing: Mapping[str, Any]) -> TableView:
    """The view of one `nft -j list table` answer.

    Elements are in verdict maps (each element with its verdict) or in sets, whose verdict is
    that of the rule looking the set up (`... @set goto bid_1`)."""
    entries: list[Entry] = []
    marks: dict[str, int] = {}
    sets: dict[str, list[Any]] = {}
    set_verdicts: dict[str, str] = {}
    for item in listing.get("nftables", []):
        if "map" in item:
            entries.extend(_map_entries(item["map"]))
        elif "set" in item:
            sets[item["set"]["name"]] = item["set"].get("elem", [])
        elif "rule" in item:
            rule = item["rule"]
            expressions = rule.get("expr", [])
            mark = _mark_set(expressions)
            if mark is not None:
                marks[rule["chain"]] = mark
            set_verdicts.update(_set_verdict(expressions))
    for name, verdict in set_verdicts.items():
        entries.extend(_set_entries(sets.get(name, []), verdict))
    return TableView(True, tuple(sorted(entries)), marks)


def _set_verdict(expressions: list[Any]) -> dict[str, str]:
    """{set: verdict} of a rule that looks a set up and then decides, else nothing."""
    looked_up = [
        e["match"]["right"][1:]
        for e in expressions
        if isinstance(e, dict)
        and isinstance(e.get("match"), dict)
        and str(e["match"].get("right", "")).startswith("@")
    ]
    decided = [e for e in expressions if isinstance(e, dict) and "match" not in e]
    if len(looked_up) != 1 or len(decided) != 1:
        return {}
    return {looked_up[0]: _verdict(decided[0])}


def _set_entries(elements: list[Any], verdict: str) -> Iterable[Entry]:
    for item in elements:
        element = item.get("elem", {}) if isinstance(item, dict) else {"val": item}
        yield _entry(element, verdict)


def _map_entries(found: Mapping[str, Any]) -> Iterable[Entry]:
    for key, verdict in found.get("elem", []):
        yield _entry(key.get("elem", {}), _verdict(verdict))


def _entry(element: Mapping[str, Any], verdict: str) -> Entry:
    comment = str(element.get("comment", "?"))
    value = element.get("val")
    parts = value.get("concat", [value]) if isinstance(value, dict) else [value]
    last = parts[-1] if parts else None
    port = last if isinstance(last, int) and not isinstance(last, bool) else None
    return Entry(comment.split(" ", 1)[0], port, verdict)


def _verdict(verdict: Mapping[str, Any]) -> str:
    for kind in ("goto", "jump"):
        if kind in verdict:
            return str(verdict[kind]["target"])
    return next(iter(verdict), "?")


def _mark_set(expressions: list[Any]) -> int | None:
    """V of a `meta mark set meta mark & M | V` rule (a BID chain's mark), else None."""
    for expression in expressions:
        mangle = expression.get("mangle") if isinstance(expression, dict) else None
        if mangle is None or mangle.get("key", {}).get("meta", {}).get("key") != "mark":
            continue
        value = mangle.get("value", {})
        if isinstance(value, dict) and "|" in value:
            return int(value["|"][1])
    return None


def expected_entries(
    policies: Iterable[Policy], unusable: frozenset[int] = frozenset()
) -> dict[str, tuple[Entry, ...]]:
    """What `by_policy()` must show for single-port UDP/TCP policies matching both families:
    two elements (IPv4, IPv6) per policy with the first usable BID of its action, or drop."""
    expected: dict[str, tuple[Entry, ...]] = {}
    for policy in policies:
        port_range = policy.selector.dst_port
        port = port_range.first if port_range is not None else None
        verdict = "drop"
        if isinstance(policy.action, Forward):
            usable = [bid for bid in policy.action.bids() if bid not in unusable]
            verdict = f"bid_{usable[0] if usable else policy.action.bid}"
        entry = Entry(policy.id, port, verdict)
        expected[policy.id] = (entry, entry)
    return dict(sorted(expected.items()))
