"""Enforcement benchmark: `python -m bench.enforcement [--quick] [--out DIR] [--no-fail]`.

1. Time to enforce one message of N policies: the paper's one-ip6tables-per-policy method,
   our iptables and nftables back ends, and the kernel's batch-load floors, side by side.
2. Forwarding rate with 10 vs 10,000 installed policies per back end.
Prints the tables and PASS/FAIL per target, writes OUT/enforcement.json (every raw sample)
and OUT/enforcement.png. Exits 1 when a target fails or could not be measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

from bench import forwarding, loadtime, report

SIZES = [1, 10, 100, 1000, 5000]
QUICK_PAPER_CAP = 1000
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench.enforcement", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 repetitions, paper N <= 1000")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    parser.add_argument("--no-fail", action="store_true", help="exit 0 even if a target fails")
    parser.add_argument("--reps", type=int, help="repetitions (default 5, --quick 3)")
    parser.add_argument("--seconds", type=float, help="forwarding window (default 2, quick 1)")
    parser.add_argument("--senders", type=int, default=2, help="parallel UDP senders")
    parser.add_argument("--skip-forwarding", action="store_true", help="load times only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run both parts, print, save, and judge the targets."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if os.geteuid() != 0:
        print("bench.enforcement needs root (network namespaces)", file=sys.stderr)
        return 2
    reps = args.reps or (3 if args.quick else 5)
    seconds = args.seconds or (1.0 if args.quick else 2.0)
    paper_cap = QUICK_PAPER_CAP if args.quick else None
    prefix = loadtime.ns_prefix()
    started = time.time()

    methods, problems = loadtime.available_methods(prefix, paper_cap)
    for line in problems:
        print(line, flush=True)
    if paper_cap is not None:
        print(f"--quick: the paper's method is run for N <= {paper_cap} only", flush=True)
    print(f"part 1: load time, {reps} repetitions, fresh namespace per sample", flush=True)
    load_samples = loadtime.run(methods, SIZES, reps, prefix)

    backends = [m.name for m in methods if m.name in ("iptables", "nftables")]
    fwd_samples: list[forwarding.ForwardSample] = []
    if not args.skip_forwarding:
        print(
            f"part 2: forwarding, {reps} windows of {seconds:g} s, {args.senders} senders, "
            "test flow = LAST policy in precedence order",
            flush=True,
        )
        fwd_samples = forwarding.run(
            backends, report.FORWARD_SIZES, reps, prefix, seconds, args.senders
        )

    load_values = report.load_values(load_samples)
    fwd_values = report.forward_values(fwd_samples)
    goals = report.targets(load_values, fwd_values)

    print(f"\nEnforcement time for one message of N policies: median of {reps} (ms), and the")
    print("median of the ratios measured side by side in each repetition")
    print(report.load_table(load_values, SIZES))
    if not args.skip_forwarding:
        print("\nForwarding rate, test packets match the LAST policy (median pkt/s; paired ratio)")
        print(report.forward_table(fwd_values, backends))
    print()
    for goal in goals:
        print(f"{goal.verdict:<5} {goal.name}: {goal.detail}")

    document = {
        "started": started,
        "seconds": time.time() - started,
        "host": {"kernel": platform.release(), "cpus": os.cpu_count()},
        "options": {
            "quick": args.quick,
            "reps": reps,
            "window_s": seconds,
            "senders": args.senders,
            "paper_cap": paper_cap,
        },
        "unavailable": problems,
        "load_samples": [asdict(s) for s in load_samples],
        "forwarding_samples": [asdict(s) for s in fwd_samples],
        "load_median_ms": _rows(report.medians(load_values), "ms"),
        "forwarding_median_pps": _rows(report.medians(fwd_values), "pps"),
        "ratios": report.all_ratios(load_values, fwd_values, SIZES),
        "targets": [{**asdict(g), "verdict": g.verdict} for g in goals],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "enforcement.json").write_text(json.dumps(document, indent=1) + "\n")
    # Imported only now: matplotlib in the parent that forks every sample made the in-process
    # back end ~1.7 ms slower at N = 1000 (a child allocating into the parent's half-used
    # memory pools copies their pages), a cost no worker pays and the floor's fresh nft not.
    from bench import plot

    plot.figure8(report.medians(load_values), args.out / "enforcement.png")
    print(f"\nwrote {args.out / 'enforcement.json'} and {args.out / 'enforcement.png'}")
    failed = [g for g in goals if g.ok is not True]
    return 1 if failed and not args.no_fail else 0


def _rows(meds: report.Medians, unit: str) -> list[dict[str, object]]:
    return [{"method": m, "size": n, unit: v} for (m, n), v in sorted(meds.items())]


if __name__ == "__main__":
    sys.exit(main())
