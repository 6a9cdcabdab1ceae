"""The HA's PREM at fleet size: `python -m bench.ha_fleet [--routers N] [--quick] [--out DIR]`.

One HA's nftables back end holding the policies of `--routers` mobile routers x `--policies`
each (default 10,000 x 10 = 100,000), in a fresh network namespace with the real kernel (run
as root). Each router's policies are host flows into its own /48 (`2001:db8:<router>::/48`),
so the table is one exact map of distinct points: what `NftablesBackend`'s point index
changes element by element. With `--scoped`, each is a class policy (a UDP port) for the
router's whole /48, as an HA holds what each router's decision steers: the same point table,
its destination a masked key (`Layer.masks`).

Measured in one forked child inside the namespace, side by side:

- cold apply: the whole table into an empty namespace (`read` + `apply`);
- cold reconcile: a new back end object (a restarted worker) reads the table from the kernel
  and plans against the desired table (equal: nothing to send);
- one router's document (its policies' BIDs changed): `apply` with that router's changes
  (the point index: an element delta), against the same change by the layered path (layers
  of the whole table against the known ones, `apply_layered`) and a full ruleset replace
  (the whole table's text in one batch), interleaved in rounds; p50/p99 and paired ratios;
- the desired state's store for one router's change: today's whole state file (every
  router's policies, `store.save`), one file per router (`durable.replace_file`), and a row
  per router in SQLite in WAL mode with `synchronous=FULL` (stdlib `sqlite3`, fsynced at each
  commit as the file is), in `--state-dir`;
- memory: RSS of the child before the policies are made and once it holds the policies,
  their flow rules, the table and the back end's index (after the cold apply, before the
  cold reconcile's second copy); bytes per policy.

The table and ratios are printed; every sample goes to OUT/ha_fleet.json.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services import netns
from services.contracts.policy import Forward, Policy, PortRange, Selector
from services.durable import replace_file
from services.prem import collector, store
from services.prem.backends.libnftables import NftContext
from services.prem.backends.nftables import NftablesBackend
from services.prem.config import PremSettings
from services.prem.core.flowtable import FlowRule, FlowTable, compile_policies
from services.prem.core.nft_layers import assign_layers
from services.prem.core.nft_render import key_text, table_commands
from services.prem.core.policyset import DesiredState
from services.prem.core.reconcile import Changes, plan

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
BIDS = (1, 2, 3, 4)
UDP = 17


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench.ha_fleet", description=__doc__)
    parser.add_argument("--routers", type=int, default=10_000, help="mobile routers")
    parser.add_argument("--policies", type=int, default=10, help="policies per router")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the side-by-side")
    parser.add_argument("--deltas", type=int, default=40, help="router documents per round")
    parser.add_argument("--quick", action="store_true", help="1000 routers, 3 rounds")
    parser.add_argument(
        "--scoped",
        action="store_true",
        help="class policies scoped by each router's /48 (masked keys), not host flows",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    parser.add_argument(
        "--state-dir", type=Path, default=Path("/var/tmp"), help="where the stores are written"
    )
    return parser.parse_args(argv)


def settings() -> PremSettings:
    """An HA with BIDs 1-4 (one node's settings: the back end is what is measured)."""
    return PremSettings.model_validate(
        {
            "node": "fleet-ha",
            "role": "ha",
            "mobile_router": "fleet",
            "bids": [{"bid": b} for b in BIDS],
        }
    )


def router_policies(
    router: int, count: int, shift: int = 0, *, scoped: bool = False
) -> tuple[Policy, ...]:
    """Router `router`'s policies, BIDs in turn (+ `shift`): UDP flows to hosts of its /48,
    or (`scoped`) class policies (a UDP port each) for its whole /48, as an HA holds the
    classes each router's NSA decision steers."""
    net = int(ipaddress.IPv6Address("2001:db8::")) + (router << 80)
    return tuple(
        Policy(
            id=f"r{router}p{k}",
            priority=k,
            selector=Selector(
                dst_addr=ipaddress.IPv6Network((net, 48))
                if scoped
                else ipaddress.IPv6Network(ipaddress.IPv6Address(net + k + 1)),
                next_header=UDP,
                dst_port=PortRange(first=5000 + k, last=5000 + k),
            ),
            action=Forward(bid=BIDS[(k + shift) % len(BIDS)]),
        )
        for k in range(count)
    )


def rss_bytes() -> int:
    """Resident set size of this process."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def timed(fn: Callable[[], object]) -> float:
    """Wall time of `fn()` in ms."""
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def _table(rules: dict[int, tuple[FlowRule, ...]]) -> FlowTable:
    """The whole desired table, in precedence order."""
    return tuple(sorted((r for rs in rules.values() for r in rs), key=FlowRule.precedence))


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Everything, in the namespace the caller entered."""
    cfg = settings()
    rng = random.Random(17)
    out: dict[str, Any] = {"rss_start": rss_bytes()}
    policies = {
        r: router_policies(r, args.policies, scoped=args.scoped) for r in range(args.routers)
    }
    start = time.perf_counter()
    rules = {r: compile_policies(ps) for r, ps in policies.items()}
    out["compile_ms"] = (time.perf_counter() - start) * 1000
    desired = _table(rules)

    backend = NftablesBackend(cfg)
    out["cold_apply_ms"] = timed(lambda: backend.apply(desired, plan(desired, backend.read())))
    # Held now: the policies, their flow rules, the table and the back end's point index
    # (and whatever the allocator kept of the apply's text).
    out["rss_holding"] = rss_bytes()
    out["cold_reconcile_ms"], out["cold_reconcile_changes"] = cold_reconcile(cfg, desired)
    out["rss_after_reconcile"] = rss_bytes()

    delta_ms: list[float] = []
    layered_ms: list[float] = []
    replace_ms: list[float] = []
    shift = 0
    context = NftContext()

    def change_one() -> Changes:
        nonlocal shift
        router = rng.randrange(args.routers)
        shift += 1
        new = compile_policies(router_policies(router, args.policies, shift, scoped=args.scoped))
        changes = plan(new, rules[router])
        rules[router] = new
        return changes

    for _round in range(args.rounds):
        for _ in range(args.deltas):
            changes = change_one()
            start = time.perf_counter()
            applied = backend.apply_delta(changes)
            delta_ms.append((time.perf_counter() - start) * 1000)
            if not applied:
                raise RuntimeError("a router's change did not fit the point index")
        change_one()
        desired = _table(rules)
        layered_ms.append(timed(lambda: backend.apply_layered(desired)))  # noqa: B023
        replace_ms.append(timed(lambda: context.run(replace_text(desired, cfg))))  # noqa: B023
    held = NftablesBackend(cfg).read()
    if held != desired:
        raise RuntimeError(f"the kernel holds {len(held)} rules, not the {len(desired)} desired")
    out.update(delta_ms=delta_ms, layered_ms=layered_ms, replace_ms=replace_ms)
    out["policies"] = len(desired)
    out["stores"] = measure_stores(args, policies)
    return out


def cold_reconcile(cfg: PremSettings, desired: FlowTable) -> tuple[float, int]:
    """A restarted worker's first look: a new back end reads the kernel's table and plans
    against the desired one. Its time (ms) and the number of rules to add."""
    restarted = NftablesBackend(cfg)
    start = time.perf_counter()
    with collector.paused():  # as `Enforcer.reconcile` does
        changes = plan(desired, restarted.read())
    return (time.perf_counter() - start) * 1000, len(changes.add) + len(changes.remove)


def replace_text(desired: FlowTable, cfg: PremSettings) -> str:
    """The whole table in one batch, as a full replace sends it."""
    return "\n".join(table_commands(assign_layers(desired, key_text), cfg)) + "\n"


def measure_stores(args: argparse.Namespace, policies: dict[int, tuple[Policy, ...]]) -> Any:
    """One router's change written durably: whole file, file per router, SQLite WAL row."""
    base = Path(tempfile.mkdtemp(prefix="ha_fleet.", dir=args.state_dir))
    everything = DesiredState(
        node="fleet-ha", version=1, policies=tuple(p for ps in policies.values() for p in ps)
    )
    whole = [timed(lambda: store.save(base / "prem.json", everything)) for _ in range(3)]
    whole_bytes = (base / "prem.json").stat().st_size
    per_file: list[float] = []
    per_row: list[float] = []
    db = sqlite3.connect(base / "prem.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(
        "CREATE TABLE routers (router TEXT PRIMARY KEY, version INTEGER, state BLOB NOT NULL)"
    )
    for version in range(1, 4 * args.deltas + 1):
        router = version % len(policies)
        data = DesiredState(
            node=f"r{router}", version=version, policies=policies[router]
        ).model_dump_json()
        path = base / "routers" / f"r{router}.json"
        per_file.append(timed(lambda: replace_file(path, data.encode())))  # noqa: B023

        def row() -> None:
            db.execute("BEGIN")
            db.execute(
                "INSERT OR REPLACE INTO routers VALUES (?, ?, ?)",
                (f"r{router}", version, data),  # noqa: B023
            )
            db.execute("COMMIT")

        per_row.append(timed(row))
    db.close()
    for leftover in sorted(base.rglob("*"), reverse=True):
        leftover.rmdir() if leftover.is_dir() else leftover.unlink()
    base.rmdir()
    return {
        "whole_file_ms": whole,
        "whole_file_bytes": whole_bytes,
        "router_file_ms": per_file,
        "sqlite_wal_ms": per_row,
    }


def pct(samples: list[float], q: float) -> float:
    """The q-quantile (0..1) of `samples`, nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def summary(result: dict[str, Any]) -> list[str]:
    """The lines printed."""
    n = result["policies"]
    delta, layered, full = result["delta_ms"], result["layered_ms"], result["replace_ms"]
    stores = result["stores"]
    held = result["rss_holding"] - result["rss_start"]
    return [
        f"{n} policies ({n // max(1, result['routers'])} per router, "
        f"{result['routers']} routers), one namespace, real kernel",
        f"cold apply (whole table)        {result['cold_apply_ms']:9.1f} ms",
        f"cold reconcile (read + plan)    {result['cold_reconcile_ms']:9.1f} ms "
        f"({result['cold_reconcile_changes']} changes)",
        "one router's document           p50 ms     p99 ms   samples",
        f"  delta (point index)        {pct(delta, 0.5):9.2f} {pct(delta, 0.99):9.2f} "
        f"{len(delta):8d}",
        f"  layered path (old apply)   {pct(layered, 0.5):9.2f} {pct(layered, 0.99):9.2f} "
        f"{len(layered):8d}",
        f"  full replace               {pct(full, 0.5):9.2f} {pct(full, 0.99):9.2f} {len(full):8d}",
        f"  ratio layered/delta (median): {statistics.median(layered) / pct(delta, 0.5):.0f}x, "
        f"replace/delta: {statistics.median(full) / pct(delta, 0.5):.0f}x",
        "store of one router's change    p50 ms     p99 ms",
        f"  whole state file ({stores['whole_file_bytes'] // 1024} KiB) "
        f"{pct(stores['whole_file_ms'], 0.5):9.2f} {pct(stores['whole_file_ms'], 0.99):9.2f}",
        f"  file per router            {pct(stores['router_file_ms'], 0.5):9.2f} "
        f"{pct(stores['router_file_ms'], 0.99):9.2f}",
        f"  SQLite WAL row             {pct(stores['sqlite_wal_ms'], 0.5):9.2f} "
        f"{pct(stores['sqlite_wal_ms'], 0.99):9.2f}",
        f"memory: RSS +{held / 2**20:.0f} MiB holding the policies, table and index: "
        f"{held / n:.0f} bytes per policy",
    ]


def main(argv: list[str] | None = None) -> int:
    """Run in a fresh namespace, print, save."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if os.geteuid() != 0:
        print("bench.ha_fleet needs root (network namespaces)", file=sys.stderr)
        return 2
    if args.quick:
        args.routers, args.rounds = 1000, 3
    ns = f"mnfleet{os.getpid()}"
    netns.create(ns)
    try:
        result = netns.call_in(ns, measure, args)
    finally:
        netns.delete(ns)
    result["routers"] = args.routers
    for line in summary(result):
        print(line)
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / "ha_fleet.json"
    target.write_text(
        json.dumps(
            {
                "options": vars(args) | {"out": str(args.out), "state_dir": str(args.state_dir)},
                **result,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
