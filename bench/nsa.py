"""NSA decision throughput: `python -m bench.nsa [--k 500,1000,2000,3000,4000] [--seconds 20]`.

One real NSA process (`NsaService`, the code `multinet nsa run` runs, with its paho
connections) is fed through a real broker by a publisher process playing K mobile routers x 3
links, each link reporting LinkMetrics at 1 Hz, the 3K reports spread evenly over each second.
Delivery is a dry run (every call counts as applied at once): this measures decisions, not
SOAP (bench/soap_delivery.py measures the gateway).

The broker is the benchmark's own mosquitto (Nagle off, bench/broker.py), so other users of
the shared broker neither disturb nor are disturbed. The publisher writes MQTT 3.1.1 PUBLISH
frames on a plain socket (QoS 0, what paho would send), from a JSON template checked once
against the LinkMetrics model: a Python paho publisher at 12000 msg/s would need most of a
core of this 2-core machine and compete with what is measured.

The data: per router, WLAN (20 ms, 50 Mbit/s, free), LTE (40 ms, 20 Mbit/s) and UMTS
(80 ms, 2 Mbit/s), each report with +-1 % noise on RTT and bit rate (a steady radio). Every
router's WLAN degrades (RTT x 15) for 5 s out of every 30 s, at a time of its own, so a
fraction of the reports is material: voice leaves WLAN at once (its delay bound) and the
best-score classes move after their dwell time, then return.

The warm-up lasts at least `--warmup` seconds, then until every binding event is in, every
router has been decided once and the inbox is nearly empty, then the dwell time and 2 s more
(the moves the start-up set off): the window sees the steady state. The start-up hold is 15 s
because the 3K binding events take seconds through the NSA's main connection while the
reports flood in: with a hold of 3 s every router was first decided without its bindings,
then decided again as each binding arrived and moved after the dwell time, inside the window.

Measured in the NSA process over the window:
- input latency: each metrics report's send time (its `timestamp`, set by the publisher just
  before the frame is written) to the end of the decision batch that handled it (decided, or
  found inside the last decision's tolerance);
- decision latency: the send time of the oldest report a decision answered to the end of
  that batch (decided and planned: the call handed to delivery);
- inbox depth every 0.5 s ("keeps up": the depth does not grow over the window, nothing was
  dropped, every report was handled, and the input p99 stays under 100 ms);
- CPU (user + system) of the NSA process and of its metrics receiver (a child process);
- the garbage collector's passes (count, longest, total).

First, the engine alone (no MQTT): the same reports fed in-process, dry-run calls answered at
once, CPU per report without the cost of making the reports.

Then the largest K that kept up is run with two replicas (`replicas = 2`), each an own
process with the same settings and its own index, to show the scaling.

Exit status 1 when K >= 3000 does not keep up with p99 < 100 ms (unless --no-fail).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

from services.nsa import mqttframes

TARGET_K = 3000
P99_TARGET_MS = 100.0
LINKS = (
    # bid, interface, technology, rtt ms, bit rate, cost per MB
    (1, "wlan0", "wlan", 20.0, 50e6, 0.0),
    (2, "lte0", "lte", 40.0, 20e6, 0.01),
    (3, "umts0", "umts", 80.0, 2e6, 0.05),
)
CYCLE_S = 30.0  # each router's WLAN degrades once per cycle ...
BAD_S = 5.0  # ... for this long
#: A link report after its envelope (sender, send time, sequence): written once per noise
#: variant (`Reports`).
TAIL = (
    '"kind":"link-metrics","interface":"%s","bid":%d,"technology":"%s","rtt_ms":%.3f,'
    '"jitter_ms":%.3f,"loss":0.0,"rx_bps":null,"tx_bps":null,"signal_dbm":null,'
    '"noise_dbm":null,"bitrate_bps":%.1f,"cost_per_mb":%s}'
)
#: Noisy variants per link and state (steady, degraded) that the reports cycle through.
VARIANTS = 16


# --- settings -------------------------------------------------------------------------------
def settings_file(
    path: Path,
    k: int,
    topic_root: str,
    port: int,
    *,
    replicas: int = 1,
    replica: int = 0,
    etcd: str | None = None,
) -> Path:
    """The NSA's settings for K routers: three classes, dry-run delivery; with `etcd`, the
    replicas lease 64 partitions there instead of a static share."""
    coordination = (
        ""
        if etcd is None
        else f'\n[nsa.coordination]\netcd = "{etcd}"\npartitions = 64\nlease_ttl_s = 2\n'
    )
    name = f"bench-{replica}"
    if etcd is not None:
        replicas, replica = 1, 0
    routers = "\n".join(
        f'  {{ id = "mr{i}", ha_node = "ha{i}", mr_node = "mrn{i}" }},' for i in range(k)
    )
    path.write_text(
        f"""[nsa]
name = "{name}"
replicas = {replicas}
replica = {replica}
startup_hold_s = 15
first_period_s = 1.2
refresh_s = 60
queue_size = 200000
mobile_routers = [
{routers}
]

[[nsa.profiles]]
name = "voice"
priority = 100
requirements = {{ max_delay_ms = 100 }}
selectors = [{{ next_header = 17, dst_port = {{ first = 5060, last = 5061 }} }}]

[[nsa.profiles]]
name = "video"
priority = 200
selectors = [{{ next_header = 6, dst_port = {{ first = 443, last = 443 }} }}]

[[nsa.profiles]]
name = "bulk"
priority = 900
steering = "cheapest"
selectors = [{{ next_header = 6, dst_port = {{ first = 20, last = 21 }} }}]

[nsa.decision]
margin = 0.1
dwell_s = 3

[nsa.gateway]
mode = "dry-run"
{coordination}
[broker]
host = "127.0.0.1"
port = {port}
topic_root = "{topic_root}"
session_expiry_s = 0
""",
        encoding="utf-8",
    )
    return path


# --- the publisher ----------------------------------------------------------------------------
def _connect(port: int, client_id: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # CONNECT, MQTT 3.1.1, clean session, keepalive 0 (no pings needed)
    sock.sendall(mqttframes.connect(client_id, 0))
    ack = sock.recv(4)
    if len(ack) < 4 or ack[0] != 0x20 or ack[3] != 0:
        raise RuntimeError(f"the broker refused the publisher: {ack!r}")
    return sock


class Reports:
    """The monitors' report payloads, made from pieces written once: per report only the
    sender, send time and sequence are formatted; the measured values (each link's RTT, jitter
    and bit rate with +-1 % noise, degraded or not) cycle through `VARIANTS` variants drawn at
    the start. Why: drawing and formatting every value cost the publisher 16 us per node
    message (a sixth of a core at 10,000 routers) on the machine whose CPU is measured."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        self.tails: dict[tuple[int, bool], list[bytes]] = {}
        for index, (bid, interface, technology, rtt, bitrate, cost) in enumerate(LINKS):
            for degraded in (False, True) if bid == 1 else (False,):
                base = rtt * 15.0 if degraded else rtt  # a router's WLAN, degraded right now
                variants = []
                for _ in range(VARIANTS):
                    noisy = base * (1.0 + rng.uniform(-0.01, 0.01))
                    rate = bitrate * (1.0 + rng.uniform(-0.01, 0.01))
                    values = (interface, bid, technology, noisy, noisy / 10, rate, f"{cost}")
                    variants.append((TAIL % values).encode())
                self.tails[(index, degraded)] = variants
        self.turn = 0

    def _tail(self, router: int, index: int, now: float) -> bytes:
        degraded = LINKS[index][0] == 1 and (now + router * 7.31) % CYCLE_S < BAD_S
        self.turn += 1
        return self.tails[(index, degraded)][self.turn % VARIANTS]

    @staticmethod
    def head(router: int, now: float, sequence: int) -> bytes:
        """A report's envelope fields, up to its kind."""
        return b'{"schema_version":1,"sender":"mrn%d","timestamp":%.6f,"sequence":%d,' % (
            router,
            now,
            sequence,
        )

    def link(self, router: int, index: int, now: float, sequence: int) -> bytes:
        """One `LinkMetrics` of link `index` of router `router`, sent at `now`."""
        return self.head(router, now, sequence) + self._tail(router, index, now)

    def node(self, router: int, now: float, sequence: int) -> bytes:
        """One `NodeMetrics` with the router's three links (a monitor with `batch_metrics`)."""
        head = self.head(router, now, sequence)
        entries = b",".join([head + self._tail(router, i, now) for i in range(len(LINKS))])
        return head + b'"kind":"node-metrics","links":[' + entries + b"]}"


def publisher(port: int, topic_root: str, k: int, seconds: float, batched: bool = False) -> int:
    """Bindings for every link, then 3K metrics reports per second, evenly spread (with
    `batched`, K messages per second, each with a router's three links)."""
    from services.contracts.messages import BindingEvent, LinkMetrics, NodeMetrics, encode

    reports = Reports(42)
    sock = _connect(port, f"bench-pub-{uuid.uuid4().hex[:8]}")
    head = reports.head(0, time.time(), 0)
    for tails in reports.tails.values():  # every piece, steady and degraded, checked once
        for tail in tails:
            LinkMetrics.model_validate_json(head + tail)
    NodeMetrics.model_validate_json(reports.node(0, time.time(), 0))
    root = topic_root.encode()
    bindings = []
    for router in range(k):
        for bid, *_ in LINKS:
            event = BindingEvent(
                sender="ha", event="registered", mobile_router=f"mr{router}", bid=bid
            )
            topic = root + f"/mr/mr{router}/binding/{bid}".encode()
            bindings.append(mqttframes.publish(topic, encode(event)))
    sock.sendall(b"".join(bindings))
    topics = [
        [root + f"/node/mrn{router}/link/{link[1]}/metrics".encode() for link in LINKS]
        for router in range(k)
    ]
    node_topics = [root + f"/node/mrn{router}/metrics".encode() for router in range(k)]
    per_second = k if batched else 3 * k
    start = time.time()
    sent = 0
    while True:
        now = time.time()
        elapsed = now - start
        if elapsed >= seconds:
            break
        due = int(elapsed * per_second)
        frames = []
        while sent < due:
            slot = sent % per_second
            if batched:
                payload = reports.node(slot, time.time(), sent)
                frames.append(mqttframes.publish(node_topics[slot], payload))
            else:
                router, index = slot // 3, slot % 3
                payload = reports.link(router, index, time.time(), sent)
                frames.append(mqttframes.publish(topics[router][index], payload))
            sent += 1
        if frames:
            sock.sendall(b"".join(frames))
        time.sleep(0.001)
    sock.sendall(mqttframes.DISCONNECT)
    sock.close()
    print(json.dumps({"sent": sent, "seconds": time.time() - start}))
    return 0


# --- the NSA process --------------------------------------------------------------------------
def nsa_process(config: Path, warmup: float, window: float, out: Path, replicas: int = 1) -> int:
    """Run the real service in this process; measure the window; write the figures."""
    from services import logsetup
    from services.nsa.core.ownership import assignment
    from services.nsa.core.routes import InputKind
    from services.nsa.etcd import Etcd
    from services.nsa.fleet import Fleet
    from services.nsa.service import Collector, NsaService
    from services.nsa.settings import load_file

    loaded = load_file(config)
    logsetup.configure(loaded.nsa.name, level="WARNING")
    if os.environ.get("NSA_SWITCH"):
        sys.setswitchinterval(float(os.environ["NSA_SWITCH"]))
    collector = Collector()  # as `multinet nsa run` does
    service = NsaService(config, loaded, collector=collector)
    collector.start()
    stats = service.core.stats

    def slots() -> list[Any]:
        """The routers this replica decides for now (with leases: its partitions')."""
        core = service.core
        if isinstance(core, Fleet):
            return [s for p in core.active for s in core.engines[p].slots.values()]
        return list(core.slots.values())

    stats.input_latency = deque(maxlen=5_000_000)
    stats.decision_latency = deque(maxlen=5_000_000)
    gc_pauses: list[tuple[int, float]] = []
    gc_started: list[float] = []

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_started.append(time.perf_counter())
        elif gc_started:
            gc_pauses.append((info["generation"], time.perf_counter() - gc_started.pop()))

    gc.callbacks.append(on_gc)
    service.start()
    print("started", flush=True)
    # Warm-up: the binding events, every router's first decision (a full Install each), the
    # backlog they leave and the moves they start (after the dwell time) are start-up work,
    # not the steady state measured here.
    time.sleep(warmup)
    deadline = time.monotonic() + 60

    def handing_over() -> bool:
        """Leases: not every replica is in yet, or the partitions are still moving (their
        holders are not yet those the members' assignment names, or this one warms some)."""
        core, leases = service.core, service.leases
        if not isinstance(core, Fleet) or leases is None or coordination is None:
            return False
        client = Etcd(coordination.etcd)
        try:
            members = {e.value for e in client.range(f"{coordination.prefix}members/")}
            holders = {
                int(e.key.rsplit("/", 1)[1]): e.value
                for e in client.range(f"{coordination.prefix}partitions/")
            }
        finally:
            client.close()
        return (
            len(members) < replicas
            or holders != assignment(coordination.partitions, members)
            or set(core.engines) != set(core.active)
        )

    coordination = loaded.nsa.coordination
    if coordination is not None:  # the other replicas join, the partitions are rebalanced
        time.sleep(2 * coordination.warm_s + coordination.lease_ttl_s)
    while time.monotonic() < deadline and (
        len(service.inbox) > 100
        or handing_over()
        or not all(s.ready for s in slots())
        or stats.inputs[InputKind.BINDING.value] < 3 * len(slots())
    ):
        time.sleep(0.2)
    time.sleep(loaded.nsa.decision.dwell_s + 2.0)
    stats.input_latency.clear()
    stats.decision_latency.clear()
    handled0, decisions0, dropped0 = _handled(stats), stats.decisions, service.inbox.dropped
    child = service.receiver.pid
    cpu0, child0, wall0 = _cpu(), _cpu_of(child), time.monotonic()
    share = len(slots())
    gc_pauses.clear()
    depths = []
    while time.monotonic() - wall0 < window:
        time.sleep(0.5)
        depths.append(len(service.inbox))
    cpu, wall = _cpu() - cpu0, time.monotonic() - wall0
    child_cpu = _cpu_of(child) - child0
    inputs = list(stats.input_latency)
    decided = list(stats.decision_latency)
    figures = {
        "routers": share,
        "handled": _handled(stats) - handled0,
        "decisions": stats.decisions - decisions0,
        "immaterial": stats.immaterial,
        "dropped": service.inbox.dropped - dropped0,
        "cpu_percent": 100 * cpu / wall,
        "receiver_cpu_percent": 100 * child_cpu / wall,
        "load_average": os.getloadavg()[0],
        "wall": wall,
        "input_p50_ms": 1000 * _quantile(inputs, 0.5),
        "input_p90_ms": 1000 * _quantile(inputs, 0.90),
        "input_p99_ms": 1000 * _quantile(inputs, 0.99),
        "input_max_ms": 1000 * max(inputs, default=math.nan),
        "decision_p50_ms": 1000 * _quantile(decided, 0.5),
        "decision_p99_ms": 1000 * _quantile(decided, 0.99),
        "depths": depths,
        "gc_max_ms": {
            str(g): 1000 * max((d for gen, d in gc_pauses if gen == g), default=0.0)
            for g in (0, 1, 2)
        },
        "gc_count": {str(g): sum(1 for gen, _ in gc_pauses if gen == g) for g in (0, 1, 2)},
        "gc_total_ms": 1000 * sum(d for _, d in gc_pauses),
    }
    out.write_text(json.dumps(figures), encoding="utf-8")
    # Replicas stop together (the driver closes our stdin once every one has measured): one
    # that stopped early would hand its partitions to the others inside their windows.
    sys.stdin.read()
    service.stop()
    return 0


def _handled(stats: Any) -> int:
    """Link reports handled: one per LinkMetrics, one per link of each NodeMetrics."""
    return int(stats.inputs["metrics"]) + len(LINKS) * int(stats.inputs["node-metrics"])


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_of(pid: int | None) -> float:
    """User + system CPU seconds of another process (0 when unknown)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _quantile(samples: list[float], fraction: float) -> float:
    if not samples:
        return math.nan
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


# --- the engine alone ------------------------------------------------------------------------
def engine_capacity(
    k: int, seconds: float, workdir: Path, batched: bool = False
) -> dict[str, float]:
    """The decision engine without MQTT: the same reports fed in-process as fast as it takes
    them (simulated time), dry-run calls answered at once, the collector run as the service
    runs it. CPU per (link) report, not counting the making of the reports; with `batched`,
    each router's three links come in one `NodeMetrics`.
    Independent of other load on the machine."""
    from services.contracts.messages import BindingEvent, encode
    from services.nsa.core.calls import Call, CallResult
    from services.nsa.core.configstore import ConfigStore
    from services.nsa.core.engine import Engine
    from services.nsa.core.routes import InputKind, Raw
    from services.nsa.delivery import DryRunDelivery
    from services.nsa.service import Collector
    from services.nsa.settings import load_file

    loaded = load_file(settings_file(workdir / f"capacity-{k}.toml", k, "cap/multinet/v1", 1))
    results: list[CallResult] = []
    delivery = DryRunDelivery(results.append)

    class Effects:
        def explain(self, mobile_router: str, record: Any) -> None:
            record.model_dump_json()  # the service encodes every decision

        def audit(self, mobile_router: str, record: Any) -> None:
            pass

        def deliver(self, call: Call) -> None:
            delivery.deliver(call)

    engine = Engine(
        loaded.nsa, loaded.nsa.mobile_routers, ConfigStore(loaded.config), Effects(), now=0.0
    )
    for router in range(k):
        for bid, *_ in LINKS:
            event = BindingEvent(
                sender="ha", event="registered", mobile_router=f"mr{router}", bid=bid
            )
            engine.accept(Raw(InputKind.BINDING, f"mr{router}", "t", encode(event)), 0.0)
    reports = Reports(7)
    per_second = k if batched else 3 * k
    collector: Collector | None = None

    def feed(first: int, last: int) -> float:
        spent = 0.0
        for start in range(first, last, 64):
            raws = []
            for step in range(start, min(last, start + 64)):
                slot = step % per_second
                if batched:
                    payload = reports.node(slot, step / per_second, step)
                    raws.append((Raw(InputKind.NODE_METRICS, f"mr{slot}", "t", payload), step))
                    continue
                router, index = slot // 3, slot % 3
                payload = reports.link(router, index, step / per_second, step)
                raws.append((Raw(InputKind.METRICS, f"mr{router}", "t", payload), step))
            began = time.thread_time()
            for raw, step in raws:
                engine.accept(raw, step / per_second)
            now = raws[-1][1] / per_second
            engine.due(now)
            engine.settle(now)
            while results:
                engine.delivered(results.pop(), now)
                engine.settle(now)
            if collector is not None:
                collector.step(now)
            spent += time.thread_time() - began
        return spent

    feed(0, int(10 * per_second))  # warm-up: first decisions, a full degradation cycle
    collector = Collector()  # as the service's decision thread runs it, after every batch
    collector.start()
    decisions0 = engine.stats.decisions
    total = int(seconds * per_second)
    cpu = feed(int(10 * per_second), int(10 * per_second) + total)
    gc.unfreeze()  # this is the driver's process: back to the defaults
    gc.enable()
    handled = total * (len(LINKS) if batched else 1)
    return {
        "us_per_report": 1e6 * cpu / handled,
        "decisions_per_s": (engine.stats.decisions - decisions0) / seconds,
        "k_per_core": 1.0 / (3 * cpu / handled),
    }


# --- the driver -------------------------------------------------------------------------------
def run_once(
    k: int,
    replicas: int,
    seconds: float,
    warmup: float,
    port: int,
    workdir: Path,
    etcd: str | None = None,
    batched: bool = False,
) -> dict[str, Any]:
    """One run: `replicas` NSA processes and one publisher; figures per replica."""
    topic_root = f"bench-{uuid.uuid4().hex[:8]}/multinet/v1"
    procs = []
    outs = []
    for replica in range(replicas):
        config = settings_file(
            workdir / f"nsa-{k}-{replicas}-{replica}.toml",
            k,
            topic_root,
            port,
            replicas=replicas,
            replica=replica,
            etcd=etcd,
        )
        out = workdir / f"figures-{k}-{replicas}-{replica}.json"
        argv = [sys.executable, "-m", "bench.nsa", "--role", "nsa", "--config", str(config)]
        argv += ["--replicas", str(replicas)]
        argv += ["--warmup", str(warmup), "--seconds", str(seconds), "--out", str(out)]
        log = (workdir / f"nsa-{k}-{replicas}-{replica}.log").open("wb")
        procs.append(
            subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        )
        outs.append(out)
    for proc in procs:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"started":
            raise RuntimeError(f"an NSA process did not start (see {workdir})")
    time.sleep(1.0)  # subscriptions
    pub_argv = [sys.executable, "-m", "bench.nsa", "--role", "publisher", "--port", str(port)]
    # The publisher outlives the NSA processes' windows (their warm-up waits for start-up).
    pub_argv += ["--root", topic_root, "--k", str(k), "--seconds", str(warmup + seconds + 75)]
    pub_argv += ["--batched"] if batched else []
    pub = subprocess.Popen(pub_argv, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + warmup + seconds + 120
    while not all(out.exists() for out in outs) and time.monotonic() < deadline:
        if any(proc.poll() is not None for proc in procs):
            break  # one failed: its log says why
        time.sleep(0.2)
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.close()
    for proc in procs:
        proc.wait(30)
    pub.terminate()
    pub.wait(10)
    figures = [json.loads(out.read_text(encoding="utf-8")) for out in outs]
    return {"k": k, "replicas": replicas, "replica_figures": figures}


def keeps_up(run: dict[str, Any]) -> bool:
    """No growth of the inbox, nothing dropped, every report handled, input p99 in bound."""
    for fig in run["replica_figures"]:
        depths = fig["depths"]
        third = max(1, len(depths) // 3)
        growing = statistics.mean(depths[-third:]) > statistics.mean(depths[:third]) + 500
        expected = 3 * fig["routers"] * fig["wall"]
        if (
            growing
            or fig["dropped"] > 0
            or fig["handled"] < 0.97 * expected
            or not fig["input_p99_ms"] < P99_TARGET_MS
        ):
            return False
    return True


def _row(run: dict[str, Any]) -> str:
    parts = []
    for index, fig in enumerate(run["replica_figures"]):
        rate = fig["handled"] / fig["wall"]
        parts.append(
            f"{run['k']:>5} {run['replicas']:>3}/{index} {fig['routers']:>6} {rate:>8.0f} "
            f"{fig['input_p50_ms']:>8.2f} {fig['input_p99_ms']:>8.2f} "
            f"{fig['decision_p50_ms']:>8.2f} {fig['decision_p99_ms']:>8.2f} "
            f"{fig['decisions'] / fig['wall']:>7.0f} {fig['cpu_percent']:>4.0f}+"
            f"{fig['receiver_cpu_percent']:<3.0f} {fig['load_average']:>5.1f} "
            f"{max(fig['depths'] or [0]):>7} {fig['dropped']:>6}  "
            f"{'yes' if keeps_up({'replica_figures': [fig]}) else 'NO'}"
        )
    return "\n".join(parts)


HEADER = (
    "    K rep/i routers   msgs/s  in p50ms in p99ms dec p50  dec p99  dec/s CPU%+rcv  load "
    "maxdepth  drops  keeps up"
)


def fleet(
    k: int,
    replicas: int,
    seconds: float,
    warmup: float,
    no_fail: bool,
    leases: bool,
    batched: bool = False,
) -> int:
    """`--routers K --replicas N`: the fleet target (10,000 routers x 3 links at 1 Hz, the
    replicas together on this machine, report -> decision p99 < 100 ms): one run of N
    replicas side by side, each with its static share (with `leases`: leasing 64 partitions
    on an etcd of the benchmark's own), then the engine alone at K/N for where the time
    goes."""
    from contextlib import ExitStack

    from bench.broker import tuned_broker
    from labs.etcd import running_etcd

    workdir = Path(tempfile.mkdtemp(prefix="bench-nsa-fleet-"))
    print(
        f"NSA fleet: {k} routers x 3 links at 1 Hz ({3 * k} reports/s"
        f"{f' in {k} node messages/s' if batched else ''}) through mosquitto, "
        f"{replicas} replicas side by side ({'leases on etcd' if leases else 'static shares'}), "
        f"{seconds:g} s window; delivery is a DRY RUN"
    )
    print(f"logs and figures: {workdir}\n")
    print(HEADER)
    with ExitStack() as stack:
        port, broker_pid = stack.enter_context(tuned_broker(workdir))
        etcd = stack.enter_context(running_etcd(workdir)) if leases else None
        cpu0 = _cpu_of(broker_pid)
        started = time.monotonic()
        run = run_once(k, replicas, seconds, warmup, port, workdir, etcd, batched)
        broker_percent = 100 * (_cpu_of(broker_pid) - cpu0) / (time.monotonic() - started)
    print(_row(run), flush=True)
    share = max(1, k // replicas)
    capacity = engine_capacity(share, 20.0, workdir, batched)
    figures = run["replica_figures"]
    p99 = max(f["input_p99_ms"] for f in figures)
    decided_p99 = max(f["decision_p99_ms"] for f in figures)
    rate = sum(f["handled"] / f["wall"] for f in figures)
    nsa_cpu = sum(f["cpu_percent"] + f["receiver_cpu_percent"] for f in figures)
    print(
        "\nwhere the time goes, per report (CPU): decision process "
        + ", ".join(
            f"{1e4 * f['cpu_percent'] / max(1, f['handled'] / f['wall']):.0f}" for f in figures
        )
        + " us; metrics receiver "
        + ", ".join(
            f"{1e4 * f['receiver_cpu_percent'] / max(1, f['handled'] / f['wall']):.0f}"
            for f in figures
        )
        + f" us; of which the engine alone (no MQTT, K={share}) "
        f"{capacity['us_per_report']:.1f} us; mosquitto {broker_percent:.0f}% of a core "
        f"over the whole run ({1e4 * broker_percent / max(1.0, rate):.0f} us per report)"
    )
    print(
        f"fleet: {rate:.0f} reports/s handled of {3 * k}/s, replicas' CPU {nsa_cpu:.0f}% "
        f"(of 200%), report -> decision p99 {decided_p99:.1f} ms, report handled p99 "
        f"{p99:.1f} ms (target < {P99_TARGET_MS:.0f} ms)"
    )
    (workdir / "results.json").write_text(json.dumps(run, indent=1), encoding="utf-8")
    passed = keeps_up(run)
    print(f"kept up: {'yes' if passed else 'NO'}")
    return 0 if passed or no_fail else 1


def receiver_process(kind: str, port: int, root: str, k: int, seconds: float, out: Path) -> int:
    """One subscriber to every metrics topic of `root`, as the metrics receiver's child
    reads them: paho (as it did) or the hand-cut frames (as it does); CPU per report."""
    from services import bus
    from services.contracts.settings import BrokerSettings
    from services.contracts.topics import Topics
    from services.nsa.core.routes import Routes
    from services.nsa.core.settings import RouterEntry
    from services.nsa.metrics_link import MetricsLink

    broker = BrokerSettings(port=port, topic_root=root)
    routers = [RouterEntry(id=f"mr{i}", ha_node=f"ha{i}", mr_node=f"mrn{i}") for i in range(k)]
    routes = Routes(Topics(root), routers)
    keys: dict[str, str | None] = {}
    count = 0

    def sort(topic: str, payload: bytes) -> None:
        nonlocal count
        key = keys.get(topic, "")
        if key == "":
            raw = routes.route(topic, b"")
            key = keys[topic] = None if raw is None else raw.key
        if key is not None:
            count += 1

    filters = routes.metrics_filters()
    if kind == "paho":
        import paho.mqtt.client as mqtt

        client = bus.make_client(broker, f"bench-paho-{uuid.uuid4().hex[:6]}", protocol=4)

        def on_message(c: Any, u: object, msg: Any) -> None:
            sort(msg.topic, bytes(msg.payload))

        client.on_connect = lambda c, *_: c.subscribe([(f, 0) for f in filters])
        client.on_message = on_message
        client.connect(broker.host, broker.port)
        client.loop_start()
        assert isinstance(client, mqtt.Client)
    else:
        link = MetricsLink(broker, f"bench-lean-{uuid.uuid4().hex[:6]}")
        link.open()
        link.subscribe(filters, 500)
    print("started", flush=True)
    began, cpu0 = time.monotonic(), time.process_time()
    while time.monotonic() - began < seconds:
        if kind == "paho":
            time.sleep(0.05)
        else:  # as the child does: what gathered since the last hand-over, at once
            time.sleep(0.002)
            for topic, payload in link.read(0.0):
                sort(topic, payload)
    cpu = time.process_time() - cpu0
    out.write_text(json.dumps({"kind": kind, "reports": count, "cpu": cpu}), encoding="utf-8")
    return 0


def receivers(k: int, seconds: float) -> int:
    """`--receiver`: paho and the hand-cut frames subscribed side by side to the same
    reports (K routers x 3 links at 1 Hz through the benchmark's broker): CPU per report."""
    from bench.broker import tuned_broker

    workdir = Path(tempfile.mkdtemp(prefix="bench-nsa-receiver-"))
    root = f"bench-{uuid.uuid4().hex[:8]}/multinet/v1"
    results = []
    with tuned_broker(workdir) as (port, _pid):
        procs, outs = [], []
        for kind in ("paho", "frames"):
            out = workdir / f"{kind}.json"
            argv = [sys.executable, "-m", "bench.nsa", "--role", "receiver", "--kind", kind]
            argv += ["--port", str(port), "--root", root, "--k", str(k)]
            argv += ["--seconds", str(seconds), "--out", str(out)]
            procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE))
            outs.append(out)
        for proc in procs:
            assert proc.stdout is not None
            proc.stdout.readline()
        time.sleep(0.5)
        pub = [sys.executable, "-m", "bench.nsa", "--role", "publisher", "--port", str(port)]
        pub += ["--root", root, "--k", str(k), "--seconds", str(seconds + 5)]
        publisher = subprocess.Popen(pub, stdout=subprocess.PIPE)
        for proc in procs:
            proc.wait(seconds + 60)
        publisher.terminate()
        publisher.wait(10)
        results = [json.loads(out.read_text(encoding="utf-8")) for out in outs]
    per = {r["kind"]: 1e6 * r["cpu"] / max(1, r["reports"]) for r in results}
    for r in results:
        print(
            f"{r['kind']:>7}: {r['reports']} reports, {r['cpu']:.2f} s CPU, "
            f"{per[r['kind']]:.1f} us per report"
        )
    print(f"paho / frames: {per['paho'] / max(1e-9, per['frames']):.1f}x the CPU per report")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--role", choices=["driver", "nsa", "publisher", "receiver"], default="driver"
    )
    parser.add_argument("--kind", choices=["paho", "frames"], help="of --role receiver")
    parser.add_argument(
        "--receiver",
        action="store_true",
        help="compare paho and the hand-cut frames on the metrics connection (CPU per report)",
    )
    parser.add_argument("--k", default="500,1000,2000,3000,4000")
    parser.add_argument("--seconds", type=float, default=20.0, help="measuring window")
    parser.add_argument("--warmup", type=float, default=5.0, help="at least; plus the start-up")
    parser.add_argument("--config", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--port", type=int)
    parser.add_argument("--root")
    parser.add_argument("--no-fail", action="store_true")
    parser.add_argument("--no-replicas", action="store_true", help="skip the two-replica run")
    parser.add_argument(
        "--routers",
        type=int,
        help="fleet mode: only this K, with --replicas replicas side by side (e.g. 10000)",
    )
    parser.add_argument("--replicas", type=int, default=3, help="replicas of the fleet mode")
    parser.add_argument("--leases", action="store_true", help="fleet mode: lease on an etcd")
    parser.add_argument(
        "--batched",
        action="store_true",
        help="each router's links in one NodeMetrics a second (a monitor's batch_metrics)",
    )
    args = parser.parse_args(argv)
    if args.role == "publisher":
        return publisher(args.port, args.root, int(args.k), args.seconds, args.batched)
    if args.role == "receiver":
        return receiver_process(
            args.kind, args.port, args.root, int(args.k), args.seconds, args.out
        )
    if args.receiver:
        return receivers(int(args.k.split(",")[-1]), args.seconds)
    if args.role == "nsa":
        return nsa_process(args.config, args.warmup, args.seconds, args.out, args.replicas)
    from bench.broker import tuned_broker

    if args.routers is not None:
        return fleet(
            args.routers,
            args.replicas,
            args.seconds,
            args.warmup,
            args.no_fail,
            args.leases,
            args.batched,
        )
    ks = [int(k) for k in args.k.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="bench-nsa-"))
    capacity = engine_capacity(TARGET_K, 30.0, workdir, args.batched)
    print(
        f"engine alone (no MQTT, K={TARGET_K}, 30 s of simulated reports): "
        f"{capacity['us_per_report']:.1f} us CPU per report including "
        f"{capacity['decisions_per_s']:.0f} decisions/s -> one core decides for "
        f"K = {capacity['k_per_core']:.0f} routers x 3 links at 1 Hz"
    )
    print(
        f"NSA decisions: K routers x 3 links at 1 Hz through mosquitto, {args.seconds:g} s "
        f"window after {args.warmup:g} s warm-up; delivery is a DRY RUN (decisions, not SOAP)"
    )
    print(f"logs and figures: {workdir}\n")
    print(HEADER)
    runs = []
    with tuned_broker(workdir) as (port, _pid):
        best = 0
        for k in ks:
            run = run_once(k, 1, args.seconds, args.warmup, port, workdir, batched=args.batched)
            runs.append(run)
            print(_row(run), flush=True)
            if keeps_up(run):
                best = max(best, k)
        if not args.no_replicas and best:
            for k in sorted({best, max(ks)}):
                run = run_once(k, 2, args.seconds, args.warmup, port, workdir, batched=args.batched)
                runs.append(run)
                print(_row(run), flush=True)
    for run in runs:
        for fig in run["replica_figures"]:
            handled = max(1, fig["handled"])
            fig["us_per_report"] = 1e6 * fig["cpu_percent"] / 100 * fig["wall"] / handled
            fig["receiver_us_per_report"] = (
                1e6 * fig["receiver_cpu_percent"] / 100 * fig["wall"] / handled
            )
    print(
        "\nCPU per report through the broker (decision process + metrics receiver): "
        + ", ".join(
            f"K={r['k']}/{r['replicas']}: "
            f"{f['us_per_report']:.0f}+{f['receiver_us_per_report']:.0f} us"
            for r in runs
            for f in r["replica_figures"][:1]
        )
    )
    (workdir / "results.json").write_text(json.dumps(runs, indent=1), encoding="utf-8")
    print(f"\nlargest K kept up by one replica: {best} (target >= {TARGET_K}, p99 < 100 ms)")
    passed = best >= TARGET_K
    return 0 if passed or args.no_fail else 1


if __name__ == "__main__":
    sys.exit(main())
