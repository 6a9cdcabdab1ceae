"""Table layouts for an HA serving a fleet: `python -m bench.fleet_layouts [--routers N]`.

An HA serving many mobile routers holds each router's policies side by side, and one router's
policies must match only that router's traffic: its mobile network prefix. A router's policies
are class selectors (a protocol and a port, `--policies` of them, BIDs 1-4 in turn), scoped by
the router's /48. This benchmark loads such a table of `--routers` routers into a fresh
network namespace (the real kernel, through libnftables in process) in each candidate layout,
then changes one router's policies `--changes` times (every BID moves: each policy's element
or rule deleted and added again), and prints per layout, side by side in one run:

- cold: the whole table in one batch, into an empty namespace;
- one router's change: wall time and the process's CPU of its batch, p50 / p99 (ms), and the
  ratio of p50s against the first layout.

Layouts:

- `masked-sets`: one exact (hash) set per BID keyed `ip6 daddr & <prefix mask> . l4proto .
  port`: the router's prefix is an exact key field once the address is masked;
- `interval-sets`: one interval set per BID keyed `prefix . l4proto . port`;
- `router-chains`: an interval verdict map from each router's prefix to a chain of its own,
  holding one plain rule per policy;
- `router-sets`: the same dispatch map, each router's chain looking up sets of its own (one
  per BID); loaded only up to `ROUTER_SETS_MAX` routers (its cold load alone took 62 s at
  10,000 routers).

Every layout's element or rule count is checked against the table once its changes are done.
Every sample goes to OUT/fleet_layouts.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.ha_fleet import pct
from services import netns
from services.prem.backends.libnftables import NftContext

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
BIDS = (1, 2, 3, 4)
TABLE = "fleet"
#: Routers above which `router-sets` is not loaded (40,000 sets: nft's cache of the sets).
ROUTER_SETS_MAX = 2000
_KEY = "ipv6_addr . inet_proto . inet_service"
_MASK48 = "ffff:ffff:ffff::"


def _mark(bid: int) -> str:
    return f"meta mark set meta mark and 0xff00ffff or {bid << 16:#010x}"


def _prefix(router: int) -> str:
    return f"2001:db8:{router:x}::"


@dataclass(frozen=True)
class Policy:
    """One class policy of a router: UDP source port `port` goes to `bid`."""

    router: int
    index: int
    port: int
    bid: int


def policies(router: int, count: int, shift: int) -> list[Policy]:
    """The router's policies; `shift` moves every one to the next BID."""
    return [Policy(router, k, 5000 + k, BIDS[(k + shift) % len(BIDS)]) for k in range(count)]


def _base(table: str) -> list[str]:
    return [f"add table inet {table}"] + [
        f"add chain inet {table} bid_{b} {{ {_mark(b)} ; accept ; }}" for b in BIDS
    ]


def _hook(table: str, verdict: str) -> str:
    return (
        f"add chain inet {table} pre {{ type filter hook prerouting priority mangle ; "
        f"policy accept ; {verdict} ; }}"
    )


class Layout:
    """How a layout writes the whole table and one router's change."""

    name = ""

    def table(self, routers: int, count: int) -> str:
        raise NotImplementedError

    def change(self, old: list[Policy], new: list[Policy]) -> str:
        raise NotImplementedError

    def held(self, ctx: NftContext) -> int:
        """Elements or rules holding policies in the kernel now."""
        raise NotImplementedError


def _comment(p: Policy) -> str:
    return f'comment "r{p.router}p{p.index} {p.index} -n"'


def _by_bid(items: list[Policy]) -> dict[int, list[Policy]]:
    found: dict[int, list[Policy]] = {}
    for p in items:
        found.setdefault(p.bid, []).append(p)
    return found


def _set_elements(ctx: NftContext, sets: list[str]) -> int:
    total = 0
    for name in sets:
        listed = ctx.run_json(f"list set inet {TABLE} {name}")
        for item in listed["nftables"]:
            if "set" in item:
                total += len(item["set"].get("elem", []))
    return total


class SetsPerBid(Layout):
    """One set per BID, looked up by one rule each (`masked-sets`, `interval-sets`)."""

    def __init__(self, masked: bool) -> None:
        self.masked = masked
        self.name = "masked-sets" if masked else "interval-sets"

    def _key(self, p: Policy) -> str:
        address = _prefix(p.router) if self.masked else f"{_prefix(p.router)}/48"
        return f"{address} . 17 . {p.port}"

    def _elements(self, verb: str, items: list[Policy]) -> list[str]:
        out = []
        for bid, group in sorted(_by_bid(items).items()):
            texts = [self._key(p) + ("" if verb == "delete" else f" {_comment(p)}") for p in group]
            out.append(f"{verb} element inet {TABLE} s_b{bid} {{ {', '.join(texts)} }}")
        return out

    def table(self, routers: int, count: int) -> str:
        flags = "" if self.masked else " flags interval ;"
        lookup = f"ip6 daddr & {_MASK48}" if self.masked else "ip6 daddr"
        cmds = [*_base(TABLE), f"add chain inet {TABLE} classify"]
        for b in BIDS:
            cmds.append(f"add set inet {TABLE} s_b{b} {{ type {_KEY} ;{flags} }}")
            cmds.append(
                f"add rule inet {TABLE} classify {lookup} . meta l4proto . udp sport "
                f"@s_b{b} goto bid_{b}"
            )
        everything = [p for r in range(routers) for p in policies(r, count, 0)]
        cmds += self._elements("add", everything)
        cmds.append(_hook(TABLE, "jump classify"))
        return "\n".join(cmds) + "\n"

    def change(self, old: list[Policy], new: list[Policy]) -> str:
        return "\n".join([*self._elements("delete", old), *self._elements("add", new)]) + "\n"

    def held(self, ctx: NftContext) -> int:
        return _set_elements(ctx, [f"s_b{b}" for b in BIDS])


def _dispatch(routers: int) -> list[str]:
    """The interval verdict map from each router's prefix to its chain, after the chains
    (nft 1.0.6 refuses, ENOENT, an element jumping to a chain added after its map in the
    same batch)."""
    elements = ", ".join(f"{_prefix(r)}/48 : goto r_{r}" for r in range(routers))
    return [
        f"add map inet {TABLE} dispatch {{ type ipv6_addr : verdict ; flags interval ; }}",
        f"add element inet {TABLE} dispatch {{ {elements} }}",
        _hook(TABLE, "ip6 daddr vmap @dispatch"),
    ]


class RouterChains(Layout):
    """A chain per router, a plain rule per policy."""

    name = "router-chains"

    def _rules(self, items: list[Policy]) -> list[str]:
        return [
            f"add rule inet {TABLE} r_{p.router} meta l4proto udp udp sport {p.port} "
            f"goto bid_{p.bid} {_comment(p)}"
            for p in items
        ]

    def table(self, routers: int, count: int) -> str:
        cmds = _base(TABLE)
        for r in range(routers):
            cmds.append(f"add chain inet {TABLE} r_{r}")
            cmds += self._rules(policies(r, count, 0))
        return "\n".join([*cmds, *_dispatch(routers)]) + "\n"

    def change(self, old: list[Policy], new: list[Policy]) -> str:
        router = new[0].router
        return "\n".join([f"flush chain inet {TABLE} r_{router}", *self._rules(new)]) + "\n"

    def held(self, ctx: NftContext) -> int:
        listed = ctx.run_json(f"list table inet {TABLE}")
        return sum(
            1
            for item in listed["nftables"]
            if "rule" in item and item["rule"]["chain"].startswith("r_")
        )


class RouterSets(Layout):
    """A chain per router looking up the router's own set per BID (protocol . port)."""

    name = "router-sets"

    def _elements(self, verb: str, items: list[Policy]) -> list[str]:
        out = []
        for bid, group in sorted(_by_bid(items).items()):
            texts = [
                f"17 . {p.port}" + ("" if verb == "delete" else f" {_comment(p)}") for p in group
            ]
            out.append(
                f"{verb} element inet {TABLE} r{group[0].router}_b{bid} {{ {', '.join(texts)} }}"
            )
        return out

    def table(self, routers: int, count: int) -> str:
        cmds = _base(TABLE)
        for r in range(routers):
            cmds.append(f"add chain inet {TABLE} r_{r}")
            for b in BIDS:
                cmds.append(
                    f"add set inet {TABLE} r{r}_b{b} {{ type inet_proto . inet_service ; }}"
                )
                cmds.append(
                    f"add rule inet {TABLE} r_{r} meta l4proto . udp sport @r{r}_b{b} goto bid_{b}"
                )
            cmds += self._elements("add", policies(r, count, 0))
        return "\n".join([*cmds, *_dispatch(routers)]) + "\n"

    def change(self, old: list[Policy], new: list[Policy]) -> str:
        return "\n".join([*self._elements("delete", old), *self._elements("add", new)]) + "\n"

    def held(self, ctx: NftContext) -> int:
        listed = ctx.run_json(f"list table inet {TABLE}")
        return sum(len(item["set"].get("elem", [])) for item in listed["nftables"] if "set" in item)


LAYOUTS: dict[str, Callable[[], Layout]] = {
    "masked-sets": lambda: SetsPerBid(masked=True),
    "interval-sets": lambda: SetsPerBid(masked=False),
    "router-chains": RouterChains,
    "router-sets": RouterSets,
}


def _timed(ctx: NftContext, text: str) -> tuple[float, float]:
    """Wall and process CPU of one batch, ms."""
    cpu, wall = time.process_time(), time.perf_counter()
    ctx.run(text)
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000


def measure(name: str, routers: int, count: int, changes: int) -> dict[str, Any]:
    """One layout, in the namespace the caller entered."""
    layout = LAYOUTS[name]()
    ctx = NftContext()
    cold_wall, cold_cpu = _timed(ctx, layout.table(routers, count))
    shift = dict.fromkeys(range(routers), 0)
    walls, cpus = [], []
    for k in range(changes):
        router = (k * 7919) % routers
        old = policies(router, count, shift[router])
        shift[router] += 1
        wall, cpu = _timed(ctx, layout.change(old, policies(router, count, shift[router])))
        walls.append(wall)
        cpus.append(cpu)
    held = layout.held(ctx)
    if held != routers * count:
        raise RuntimeError(f"{name}: the kernel holds {held} policies, not {routers * count}")
    return {
        "cold_ms": cold_wall,
        "cold_cpu_ms": cold_cpu,
        "change_ms": walls,
        "change_cpu_ms": cpus,
    }


def main(argv: list[str] | None = None) -> int:
    """Every layout in its own namespace, one after the other; the table and the JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_layouts", description=__doc__)
    parser.add_argument("--routers", type=int, default=10_000, help="mobile routers")
    parser.add_argument("--policies", type=int, default=10, help="policies per router")
    parser.add_argument("--changes", type=int, default=40, help="router changes per layout")
    parser.add_argument("--layouts", default=",".join(LAYOUTS), help="comma-separated")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if os.geteuid() != 0:
        print("bench.fleet_layouts needs root (network namespaces)", file=sys.stderr)
        return 2
    names = [n for n in args.layouts.split(",") if n]
    unknown = [n for n in names if n not in LAYOUTS]
    if unknown:
        parser.error(f"unknown layouts {unknown}; known: {', '.join(LAYOUTS)}")
    print(
        f"{args.routers} routers x {args.policies} policies, {args.changes} changes of one "
        "router each, per layout (fresh namespace, libnftables in process)",
        flush=True,
    )
    results: dict[str, Any] = {}
    for name in names:
        if name == "router-sets" and args.routers > ROUTER_SETS_MAX:
            print(f"  {name}: not loaded above {ROUTER_SETS_MAX} routers", flush=True)
            continue
        ns = f"mnlayout{os.getpid()}"
        netns.create(ns)
        try:
            results[name] = netns.call_in(
                ns, measure, name, args.routers, args.policies, args.changes
            )
        finally:
            netns.delete(ns)
        print(f"  {name}: done", flush=True)
    if not results:
        return 1
    first = next(iter(results.values()))
    base = statistics.median(first["change_ms"])
    print(
        f"\n{'layout':<15} {'cold ms':>9} {'change p50':>11} {'p99':>8} {'CPU p50':>8} "
        f"{'p50 / ' + next(iter(results)):>22}"
    )
    for name, r in results.items():
        p50 = statistics.median(r["change_ms"])
        print(
            f"{name:<15} {r['cold_ms']:>9.0f} {p50:>11.2f} {pct(r['change_ms'], 0.99):>8.2f} "
            f"{statistics.median(r['change_cpu_ms']):>8.2f} {p50 / base:>21.1f}x"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    document = {"options": vars(args) | {"out": str(args.out)}, "results": results}
    (args.out / "fleet_layouts.json").write_text(json.dumps(document, indent=1) + "\n")
    print(f"\nwrote {args.out / 'fleet_layouts.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
