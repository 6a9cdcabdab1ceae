"""Soak benchmark: every service under churn for minutes; memory over time; exact end state.

    sudo .venv/bin/python -m bench.soak [--minutes 10] [--policies 200] [--sample-s 5]

Not part of CI. On a broker of its own (`bench/broker.py`) it runs the HA's and the MR's PREM
workers, the SOAP gateway, the link monitor and mobility_events as real processes
(`bench/soakbed.py`), and for `--minutes` keeps them busy at once:

- policy churn: a SOAP call every `--churn-s` through the gateway to both workers, Install of a
  fresh random set of `--policies` policies every fourth call, Updates in between (a few BIDs
  replaced, one policy deleted, one inserted);
- flapping links: every `--flap-s` the HA's BID 2 link and the monitor's second link change
  carrier (down, then up), so the worker moves flows to their fallbacks and back and the
  monitor publishes link-down and link-up;
- mobility signalling: a Binding Update and Acknowledgement each second, a care-of address
  change every tenth, each one a binding event.

Every `--sample-s` it reads each process's resident memory (VmRSS in /proc/<pid>/status) and
prints a row. At the end the links come back up and the run checks that the HA's kernel holds
exactly the desired policies (read with `nft -j` in its namespace) and that the MR's worker
enforces the last version with the expected number of rules. Exit status 1 when that check or a
call failed, 2 when not run as root. Results also go to bench/results/soak.json.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import os
import random
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from bench.broker import tuned_broker
from bench.soakbed import ROLES, Bed
from bench.soakdrive import Churn, Flapper, Signalling
from services.prem.readback import expected_entries, read_table

RESULTS = Path(__file__).resolve().parent / "results"


def rss_mib(pid: int) -> float | None:
    """Resident memory of a process in MiB (None once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def scrape(port: int) -> dict[str, float]:
    """A metrics endpoint's samples by `name{labels}` text."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


def wait_metric(port: int, name: str, check: Callable[[float], bool], timeout_s: float) -> None:
    """Poll an endpoint until `name` satisfies `check`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = scrape(port).get(name)
        except OSError:
            value = None
        if value is not None and check(value):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} on port {port} is {value} after {timeout_s} s")
        time.sleep(0.1)


@dataclass
class Samples:
    """RSS per role over time."""

    pids: dict[str, int]
    rows: list[tuple[float, dict[str, float | None]]] = field(default_factory=list)

    def take(self, elapsed: float) -> None:
        row = {role: rss_mib(pid) for role, pid in self.pids.items()}
        self.rows.append((elapsed, row))
        cells = "  ".join(f"{_mib(row[r]):>{len(r)}}" for r in self.pids)
        print(f"{elapsed:7.0f}  {cells}", flush=True)

    def header(self) -> None:
        print(f"{'t (s)':>7}  " + "  ".join(self.pids), flush=True)

    def summary(self) -> dict[str, dict[str, float]]:
        """First (after start-up), peak and last RSS per role, MiB."""
        out = {}
        warm = self.rows[1:] or self.rows  # the first sample is taken during start-up work
        for role in self.pids:
            series = [value for _, row in warm if (value := row[role]) is not None]
            if series:
                first, last = series[0], series[-1]
                out[role] = {
                    "first": first,
                    "peak": max(series),
                    "last": last,
                    "growth": last - first,
                }
        return out


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def run(args: argparse.Namespace, workdir: Path) -> int:
    """Build, soak, check; return the exit status."""
    with tuned_broker(workdir) as (broker_port, broker_pid), ExitStack() as stack:
        bed = Bed(workdir, broker_port)
        bed.build(stack)
        for role in ROLES:
            wait_metric(bed.ports[role], "multinet_broker_connected", lambda v: v == 1, 30)
        rng = random.Random(args.seed)
        churn = Churn(bed, args.policies, rng)
        flapper = Flapper(bed)
        signalling = Signalling(bed)
        stack.callback(signalling.close)
        pids = {role: proc.popen.pid for role, proc in bed.procs.items()} | {"broker": broker_pid}
        samples = Samples(pids)
        print(
            f"soak: {args.minutes} min, {args.policies} policies, a call every {args.churn_s} s, "
            f"links flap every {args.flap_s} s; RSS in MiB every {args.sample_s} s",
            flush=True,
        )
        samples.header()
        started = time.monotonic()
        end = started + args.minutes * 60
        order = itertools.count()
        timers: list[tuple[float, int, str]] = []
        for name in ("sample", "churn", "flap", "signal"):
            heapq.heappush(timers, (started, next(order), name))
        periods = {
            "sample": args.sample_s,
            "churn": args.churn_s,
            "flap": args.flap_s / 2,
            "signal": 1.0,
        }
        actions: dict[str, Callable[[], object]] = {
            "sample": lambda: samples.take(time.monotonic() - started),
            "churn": churn.step,
            "flap": flapper.toggle,
            "signal": signalling.step,
        }
        while True:
            due, _, name = heapq.heappop(timers)
            if due >= end:
                break
            time.sleep(max(0.0, due - time.monotonic()))
            actions[name]()
            heapq.heappush(timers, (max(due + periods[name], time.monotonic()), next(order), name))
        samples.take(time.monotonic() - started)
        flapper.restore()
        return _report(args, bed, churn, flapper, signalling, samples)


def _report(
    args: argparse.Namespace,
    bed: Bed,
    churn: Churn,
    flapper: Flapper,
    signalling: Signalling,
    samples: Samples,
) -> int:
    ha, mr = bed.ports["prem-ha"], bed.ports["prem-mr"]
    wait_metric(ha, "multinet_prem_fallbacks_active", lambda v: v == 0, 30)
    wait_metric(ha, "multinet_prem_enforced_version", lambda v: v == churn.enforced, 30)
    kernel = read_table(bed.prem_lab.router).by_policy()
    wanted = expected_entries(churn.desired)
    kernel_ok = kernel == wanted
    mr_metrics = scrape(mr)
    mr_ok = mr_metrics.get("multinet_prem_enforced_version") == churn.enforced and mr_metrics.get(
        "multinet_prem_rules_owned"
    ) == 2 * len(churn.desired)
    ha_metrics = scrape(ha)
    counts = {
        "calls": churn.calls,
        "calls not applied by both": churn.failed,
        "policy versions": churn.enforced,
        "carrier flaps": flapper.flaps,
        "HA fallback changes": ha_metrics.get("multinet_prem_fallbacks_total", 0),
        "monitor link-state messages": scrape(bed.ports["monitor"]).get(
            "multinet_monitor_messages_published_total{kind=link-state}", 0
        ),
        "binding events": sum(
            v
            for k, v in scrape(bed.ports["mobility-events"]).items()
            if k.startswith("multinet_mobility_events_published_total")
        ),
        "BU/BA exchanges": signalling.sent,
    }
    memory = samples.summary()
    print("\nRSS (MiB): first sample after start-up, peak, last, growth")
    for role, row in memory.items():
        print(
            f"  {role:16} {row['first']:7.1f} {row['peak']:7.1f} {row['last']:7.1f} "
            f"{row['growth']:+7.1f}"
        )
    print("\nactivity:")
    for name, value in counts.items():
        print(f"  {name:30} {value:g}")
    owned = sum(len(entries) for entries in kernel.values())
    verdict = "EQUAL" if kernel_ok else "DIFFERENT"
    print(
        f"\nend state: HA kernel holds {owned} rules for {len(kernel)} policies, desired "
        f"{2 * len(churn.desired)} for {len(churn.desired)}: {verdict}"
        f"; MR worker at version {mr_metrics.get('multinet_prem_enforced_version'):g} with "
        f"{mr_metrics.get('multinet_prem_rules_owned'):g} rules: {'OK' if mr_ok else 'WRONG'}"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soak.json").write_text(
        json.dumps(
            {
                "minutes": args.minutes,
                "policies": args.policies,
                "rss_mib": [{"t": t, **row} for t, row in samples.rows],
                "summary": memory,
                "activity": counts,
                "kernel_equals_desired": kernel_ok,
                "mr_ok": mr_ok,
            },
            indent=1,
        )
    )
    return 0 if kernel_ok and mr_ok and churn.failed == 0 else 1


def main() -> int:
    """Parse the options, run in a temporary directory, return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--policies", type=int, default=200)
    parser.add_argument("--churn-s", type=float, default=0.5, help="seconds between SOAP calls")
    parser.add_argument("--flap-s", type=float, default=4.0, help="one carrier flap per period")
    parser.add_argument("--sample-s", type=float, default=5.0, help="RSS sampling period")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench.soak needs root (network namespaces and netfilter).", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="multinet-soak-"))
    print(f"logs and state in {workdir}", flush=True)
    return run(args, workdir)


if __name__ == "__main__":
    sys.exit(main())
