"""One HA worker's core serving many routers: `python -m bench.ha_worker [--routers N]`.

`services.prem.fleet.FleetEnforcer` with the nftables back end and the SQLite store, in a
fresh network namespace (the real kernel, run as root), serving `--routers` mobile routers
(default 10,000), each a node of its own with its /48. Every router's document is an Install
of `--policies` class policies (a UDP port each, no address: the worker scopes them to the
router's prefix), rendered as the policy XML a gateway publishes. Measured in one child:

- filling: each router's first document, one after the other, into a growing table;
- one router's document once all are in (every policy to another BID), `--documents` of
  them at random routers: the whole handling (parse, checks, scope, compile, element delta,
  the router's SQLite row), p50 / p99, and how many were element deltas;
- a cold start: a new core loading every router's row, then reconciling the kernel table
  (nothing to change);
- memory: RSS growth while holding every router's policies, rules, table and index.

Printed, and every sample written to OUT/ha_worker.json.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.ha_fleet import pct, router_policies, rss_bytes, settings
from services import netns
from services.contracts import policy_xml
from services.contracts.policy import Install, PolicyMessage
from services.prem.backends.nftables import NftablesBackend
from services.prem.core.fleetscope import ServedRouter
from services.prem.fleet import FleetEnforcer
from services.prem.fleetstore import FleetStore

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def served(count: int) -> tuple[ServedRouter, ...]:
    """Router i: node `ha-r<i>`, id `r<i>`, prefix 2001:db8:<i>::/48."""
    base = int(ipaddress.IPv6Address("2001:db8::"))
    return tuple(
        ServedRouter(f"ha-r{i}", f"r{i}", ipaddress.IPv6Network((base + (i << 80), 48)))
        for i in range(count)
    )


def document(router: ServedRouter, version: int, count: int, shift: int) -> bytes:
    """The router's Install of `count` class policies (their destinations left to scoping)."""
    policies = tuple(
        p.model_copy(update={"selector": p.selector.model_copy(update={"dst_addr": None})})
        for p in router_policies(0, count, shift)
    )
    return policy_xml.render(
        PolicyMessage(
            node=router.node,
            mobile_router=router.mobile_router,
            direction="downlink",
            version=version,
            operation=Install(policies=policies),
        )
    )


def _timed_handle(fleet: FleetEnforcer, node: str, payload: bytes) -> float:
    start = time.perf_counter()
    status = fleet.handle(node, payload)
    elapsed = (time.perf_counter() - start) * 1000
    if status.result != "applied":
        raise RuntimeError(f"{node}: {status.refusals}")
    return elapsed


def measure(args: argparse.Namespace, state_dir: str) -> dict[str, Any]:
    """Everything, in the namespace the caller entered."""
    routers = served(args.routers)
    cfg = settings()
    store_path = Path(state_dir) / "fleet.db"
    out: dict[str, Any] = {"rss_start": rss_bytes()}
    fleet = FleetEnforcer(cfg, routers, NftablesBackend(cfg), FleetStore(store_path))
    fleet.reconcile()
    fill = [_timed_handle(fleet, r.node, document(r, 1, args.policies, 0)) for r in routers]
    out["fill_ms"] = fill
    out["rss_holding"] = rss_bytes()
    rng = random.Random(23)
    versions = dict.fromkeys((r.node for r in routers), 1)
    change_ms: list[float] = []
    deltas = 0
    for k in range(args.documents):
        router = routers[rng.randrange(len(routers))]
        versions[router.node] += 1
        payload = document(router, versions[router.node], args.policies, k + 1)
        change_ms.append(_timed_handle(fleet, router.node, payload))
        deltas += fleet.backend.last_apply == "delta"  # type: ignore[attr-defined]
    out["change_ms"] = change_ms
    out["deltas"] = deltas
    table = fleet.table()
    fleet.store.close()

    start = time.perf_counter()
    restarted = FleetEnforcer(cfg, routers, NftablesBackend(cfg), FleetStore(store_path))
    out["load_ms"] = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    out["reconcile_changes"] = restarted.reconcile()
    out["reconcile_ms"] = (time.perf_counter() - start) * 1000
    if restarted.table() != table:
        raise RuntimeError("the restarted core's table differs from the one before")
    out["policies"] = len(table)
    out["store_bytes"] = sum(p.stat().st_size for p in Path(state_dir).glob("fleet.db*"))
    return out


def summary(result: dict[str, Any]) -> list[str]:
    """The printed table."""
    fill, change = result["fill_ms"], result["change_ms"]
    per_policy = (result["rss_holding"] - result["rss_start"]) / max(1, result["policies"])
    return [
        f"{result['routers']} routers x {result['policies'] // result['routers']} class "
        f"policies ({result['policies']} in all), one HA worker core, nftables, SQLite WAL",
        f"{'':34}{'p50 ms':>9}{'p99 ms':>9}{'samples':>9}",
        f"{'first document of each router':34}{statistics.median(fill):>9.2f}"
        f"{pct(fill, 0.99):>9.2f}{len(fill):>9}",
        f"{'one router document, all in':34}{statistics.median(change):>9.2f}"
        f"{pct(change, 0.99):>9.2f}{len(change):>9}",
        f"  element deltas: {result['deltas']} of {len(change)}",
        f"cold start: load every router's row {result['load_ms']:.0f} ms, reconcile "
        f"{result['reconcile_ms']:.0f} ms ({result['reconcile_changes']} changes)",
        f"memory: RSS +{(result['rss_holding'] - result['rss_start']) / 2**20:.0f} MiB, "
        f"{per_policy:.0f} bytes per policy; store {result['store_bytes'] / 2**20:.1f} MiB",
    ]


def main(argv: list[str] | None = None) -> int:
    """Run in a fresh namespace, print, save."""
    parser = argparse.ArgumentParser(prog="python -m bench.ha_worker", description=__doc__)
    parser.add_argument("--routers", type=int, default=10_000, help="mobile routers served")
    parser.add_argument("--policies", type=int, default=10, help="class policies per router")
    parser.add_argument("--documents", type=int, default=200, help="changes measured")
    parser.add_argument(
        "--state-dir", type=Path, default=Path("/var/tmp"), help="where the store is written"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if os.geteuid() != 0:
        print("bench.ha_worker needs root (network namespaces)", file=sys.stderr)
        return 2
    ns = f"mnworker{os.getpid()}"
    netns.create(ns)
    try:
        with tempfile.TemporaryDirectory(dir=args.state_dir) as state_dir:
            result = netns.call_in(ns, measure, args, state_dir)
    finally:
        netns.delete(ns)
    result["routers"] = args.routers
    for line in summary(result):
        print(line)
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / "ha_worker.json"
    options = vars(args) | {"out": str(args.out), "state_dir": str(args.state_dir)}
    target.write_text(json.dumps({"options": options, **result}, indent=1) + "\n")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
