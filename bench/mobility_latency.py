"""Latency from a Binding Update/Acknowledgement on the wire to its event on the broker.

The real mobility-events service runs in its own process, capturing in the HA namespace of a
two-namespace lab (`labs/mobility_events.py`); the MR namespace sends real BUs through
a raw protocol-135 socket and the HA namespace answers with real BAs. Measured per exchange:

- BA: from `sendto` of the BA to the arrival of the `refreshed` event (same CoA re-registered),
- BU: from `sendto` of a BU naming a new care-of address to the `handover-started` event,

both as seen by a paho subscriber on the same broker (QoS 1 publish; one clock, time.time()).
The exchanges alternate between the two care-of addresses for the BU part, so every BU is a
handover. Exit status 1 when a p99 is over the target (the issue asks p99 < 20 ms), 2 when
not run as root.

    .venv/bin/python -m bench.mobility_latency [--count 50] [--target-ms 20]
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

from labs.mobility_events import (
    COA1,
    COA2,
    HA_NODE,
    EventListener,
    MobilityLab,
    Signaller,
    service_process,
    write_config,
)
from services.contracts.messages import BindingEventKind
from services.contracts.settings import BrokerSettings


def _wait(listen: EventListener, kind: BindingEventKind, log: Path) -> float:
    try:
        arrival = listen.next(5.0)
    except queue.Empty:
        sys.exit(f"no {kind} event within 5 s; service log:\n{log.read_text()[-2000:]}")
    if arrival.event.event is not kind:
        sys.exit(f"expected {kind}, got {arrival.event}")
    return arrival.at


def _percentiles(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p99 * 1000, ordered[-1] * 1000


def measure(count: int, broker: BrokerSettings, workdir: Path) -> dict[str, list[float]]:
    """Run the lab and return the latencies (seconds) of `count` BAs and `count` BUs."""
    lab = MobilityLab()
    lab.build()
    listen = EventListener(broker)
    send = Signaller(lab)
    log = workdir / "service.log"
    results: dict[str, list[float]] = {"ba": [], "bu": []}
    try:
        with service_process(write_config(workdir, broker.topic_root), lab.ha, log):
            listen.wait_online(HA_NODE)
            sequence = 1
            send.send_bu(COA1, sequence, 100, 1)
            send.send_ba(COA1, sequence, 100)
            _wait(listen, BindingEventKind.REGISTERED, log)
            for _ in range(count):
                sequence += 1
                send.send_bu(COA1, sequence, 100, 1)
                sent = send.send_ba(COA1, sequence, 100)
                results["ba"].append(_wait(listen, BindingEventKind.REFRESHED, log) - sent)
            coa, other = COA1, COA2
            for _ in range(count):
                sequence += 1
                sent = send.send_bu(other, sequence, 100, 1)
                arrived = _wait(listen, BindingEventKind.HANDOVER_STARTED, log)
                results["bu"].append(arrived - sent)
                send.send_ba(other, sequence, 100)
                _wait(listen, BindingEventKind.COA_CHANGED, log)
                coa, other = other, coa
    finally:
        send.close()
        listen.close()
        lab.destroy()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50, help="exchanges per kind")
    parser.add_argument("--target-ms", type=float, default=20.0, help="p99 target")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces, raw sockets)", file=sys.stderr)
        return 2
    broker = BrokerSettings(
        host=args.host,
        port=args.port,
        topic_root=f"bench-{uuid.uuid4().hex[:8]}/multinet/v1",
        session_expiry_s=60,
    )
    with tempfile.TemporaryDirectory(prefix="mobility-bench-") as tmp:
        results = measure(args.count, broker, Path(tmp))
    failed = False
    header = f"{'signal':<6} {'n':>4} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    print(f"{header}  target p99 < {args.target_ms} ms")
    for name, samples in results.items():
        p50, p99, worst = _percentiles(samples)
        verdict = "ok" if p99 < args.target_ms else "FAIL"
        failed |= verdict == "FAIL"
        print(
            f"{name.upper():<6} {len(samples):>4} {p50:>8.2f} {p99:>8.2f} {worst:>8.2f}  {verdict}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
