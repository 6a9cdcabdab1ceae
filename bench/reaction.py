"""Reaction times of the whole chain on the test bed, over N repetitions (default 50).

Each measure runs on its own fresh test bed (`services.testbed.runner.session`: every service
its own process in its namespace, a real broker), and reports p50, p99 and max against its
target:

- (a) metric change -> enforced at both HA and MR (needs the NSA service): the bench plays
  the monitor (which is not started) and publishes each link's metrics itself; a class needs
  `max_delay_ms` 100 and prefers eth1. Timed from publishing an eth1 RTT of 500 ms to the
  later of the two PREM statuses `applied` (as the bus delivers them), then back; and where
  the time went, as the bus shows it. Target p99 < 50 ms.
- (b) carrier loss on the MR's active link -> flows on the other link (the PREM's local
  fallback; no NSA involved): a UDP stream MNN -> CN at 2000 packets/s bound to eth1 (BID 2,
  fallback BID 1) through the SOAP gateway. Timed from the netlink request that takes the
  AR's end of eth1 down to the first packets counted on the MR's eth0 (three, so a stray
  probe does not count), polled every 1 ms with a raw netlink request in the MR's namespace.
  Target p99 < 20 ms.
- (c) a BU from a new care-of address -> NSA re-evaluated and enforced (needs the NSA): eth1's
  care-of address alternates between two addresses (make before break; the MCoA agent sends
  its BU when the old one goes). Timed from removing the old address to the later of the two
  PREM statuses that follow (the NSA moving the class off the link in handover), or, when the
  NSA had nothing to change, to its decision record. The old address is removed from a thread
  in the MR's namespace, timed at its netlink request. Target p99 < 100 ms.
- (d) a brownout's onset -> the monitor's report on the bus (`measure_d`): one protected link
  probed at 10 Hz whose peer starts answering 150 ms late, threshold 50 ms. Target p99 <
  500 ms, the step's own 150 ms included.

- (p) the forwarding rate through one pipe of each kind this kernel has, beside plain
  routing (`bench.pipes`).

Every test bed uses the pipe kind `--pipe` asks for (default auto: the first this kernel has);
the output and `reaction.json` name it.

    sudo .venv/bin/python -m bench.reaction [--count 50] [--only a,b,c,d,p] [--pipe auto]
        [--out DIR]

Writes `reaction.json` (percentiles and every sample) to --out, beside each part's run
directory (logs and configs of every service).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue
import socket
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any, TypeVar, cast

import yaml

from bench import pipes as pipes_bench
from services import capabilities, netns
from services.contracts.messages import LinkMetrics, PolicyStatus, encode
from services.nsa.core import NsaConfig
from services.testbed import access, runner
from services.testbed import addressing as a
from services.testbed.actions import SoapStub
from services.testbed.counters import read_counts
from services.testbed.recorder import Heard, PolicySent
from services.testbed.rundata import RunOptions
from services.testbed.scenario import Decider, Scenario, Step

T = TypeVar("T")

TARGETS_MS = {"a": 50.0, "b": 20.0, "c": 100.0, "d": 500.0}
TITLES = {
    "a": "metric change -> enforced at HA and MR",
    "b": "carrier loss -> first packet on the other link",
    "c": "BU from a new CoA -> NSA re-evaluated, enforced",
    "d": "brownout onset (RTT 0 -> 150 ms) -> reported",
}
PORT = 5001
PPS = 2000
UDP_POLICY: dict[str, Any] = {
    "id": "bench",
    "priority": 10,
    "selector": {"next_header": 17, "dst_port": {"first": PORT, "last": PORT}},
    "action": {"kind": "forward", "bid": 2, "fallbacks": [1]},
}


# Counters and link switches inside namespaces --------------------------------------------


class TxWatch:
    """Polls the tx counters of some devices of a namespace in a thread (every `period_s`),
    with a raw RTM_GETLINK per device (`counters.read_counts`, ~30 us: the poll loop must not
    be what is measured)."""

    def __init__(self, ns: str, devices: tuple[str, ...], period_s: float = 0.001) -> None:
        self.ns, self.devices, self.period_s = ns, devices, period_s
        self.latest: dict[str, tuple[float, int]] = {}
        self.history: dict[str, list[tuple[float, int]]] = {d: [] for d in devices}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tx-watch", daemon=True)

    def __enter__(self) -> TxWatch:
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError(f"cannot poll counters in {self.ns}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)

    def _run(self) -> None:
        netns.enter(self.ns)
        indexes = {d: socket.if_nametoindex(d) for d in self.devices}
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
            seq = 0
            while not self._stop.is_set():
                for device, index in indexes.items():
                    seq += 1
                    counts = read_counts(sock, index, seq)
                    if counts is None:
                        raise RuntimeError(f"no counters for {device} in {self.ns}")
                    value, now = counts.tx_packets, time.monotonic()
                    with self._lock:
                        last = self.latest.get(device)
                        self.latest[device] = (now, value)
                        if last is None or last[1] != value:
                            self.history[device].append((now, value))
                self._ready.set()
                time.sleep(self.period_s)

    def count(self, device: str) -> int:
        """The latest count of `device`."""
        with self._lock:
            return self.latest[device][1]

    def first_rise(self, device: str, since: float, by: int, timeout_s: float) -> float | None:
        """When `device` had counted `by` more packets than just before `since`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                points = list(self.history[device])
            base = next((v for t, v in reversed(points) if t < since), None)
            if base is not None:
                hit = next((t for t, v in points if t >= since and v - base >= by), None)
                if hit is not None:
                    return hit
            time.sleep(0.001)
        return None

    def flowing(self, device: str, packets: int, within_s: float, timeout_s: float) -> bool:
        """Wait until `device` counts `packets` within `within_s` (the stream is there)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            before = self.count(device)
            time.sleep(within_s)
            if self.count(device) - before >= packets:
                return True
        return False


class Netlink:
    """An IPRoute in a thread living in a namespace, so a change is timed right at its
    netlink request (no process start in between). `call` runs a function there."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self._requests: queue.Queue[Callable[[Any], Any] | None] = queue.Queue()
        self._done: queue.Queue[tuple[bool, Any]] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=f"netlink-{ns}", daemon=True)
        self._thread.start()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        from pyroute2 import IPRoute

        netns.enter(self.ns)
        with IPRoute() as ipr:
            while (fn := self._requests.get()) is not None:
                try:
                    self._done.put((True, fn(ipr)))
                except Exception as exc:  # handed to the caller
                    self._done.put((False, exc))

    def call(self, fn: Callable[[Any], T]) -> T:
        """`fn(ipr)` in the namespace's thread; its result, or its exception raised here."""
        self._requests.put(fn)
        ok, value = self._done.get(timeout=5)
        if not ok:
            raise RuntimeError(f"netlink request in {self.ns}: {value!r}") from value
        return cast(T, value)

    def close(self) -> None:
        self._requests.put(None)
        self._thread.join(2)


def _stamped(request: Callable[[], object]) -> float:
    """When `request` started (monotonic), after running it."""
    at = time.monotonic()
    request()
    return at


class LinkSwitch(Netlink):
    """Sets a device of a namespace up or down. Bringing an AR's port back up goes through
    `access.set_carrier`, which restores its addresses."""

    def __init__(self, ns: str, device: str) -> None:
        super().__init__(ns)
        self.index: int = self.call(lambda ipr: ipr.link_lookup(ifname=device)[0])

    def set(self, *, up: bool) -> float:
        """Change the state; when the request went to the kernel."""
        state = "up" if up else "down"
        return self.call(
            lambda ipr: _stamped(lambda: ipr.link("set", index=self.index, state=state))
        )


def remove_addresses(hand: Netlink, device: str, entries: list[str]) -> float:
    """Remove `entries` ("addr/len") from `device`; when the first request was sent."""

    def remove(ipr: Any) -> float:
        index = ipr.link_lookup(ifname=device)[0]
        pairs = [entry.split("/") for entry in entries]
        return _stamped(
            lambda: [ipr.addr("del", index=index, address=x, prefixlen=int(n)) for x, n in pairs]
        )

    return hand.call(remove)


def _udp_sender(ns: str, stop: EventType) -> None:
    netns.enter(ns)
    interval = 1 / PPS
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        due = time.monotonic()
        while not stop.is_set():
            sock.sendto(b"x" * 64, (a.CN, PORT))
            due += interval
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)


@contextmanager
def udp_stream(ns: str) -> Iterator[None]:
    """UDP datagrams from `ns` (the MNN) to the CN's port PORT at PPS, in a forked child."""
    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    proc = ctx.Process(target=_udp_sender, args=(ns, stop), daemon=True)
    proc.start()
    try:
        yield
    finally:
        stop.set()
        proc.join(5)
        if proc.is_alive():
            proc.kill()


# Test beds ----------------------------------------------------------------------------------


def _options(name: str, decider: Decider, nsa: NsaConfig, out: Path, pipe: str) -> RunOptions:
    scenario = Scenario(
        name=name, deciders=(decider,), nsa=nsa, steps=(Step(at=0, note="driven by the bench"),)
    )
    out.mkdir(parents=True, exist_ok=True)
    path = out / "bench-scenario.yaml"
    path.write_text(yaml.safe_dump(scenario.model_dump(mode="json")), encoding="utf-8")
    return RunOptions(
        scenario=scenario, scenario_file=path, decider=decider, out=out, prefix="mtbb", pipe=pipe
    )


def _nsa_config(requirements: dict[str, Any]) -> NsaConfig:
    return NsaConfig.model_validate(
        {
            "settings": {"dwell_s": 0.0, "margin": 0.0},
            "profiles": [
                {
                    "name": "bench",
                    "selectors": [UDP_POLICY["selector"]],
                    "requirements": requirements,
                    "steering": "priority",
                    "order": [2, 1],
                    "priority": 10,
                }
            ],
        }
    )


POLICY_ID = "bench.0"  # the NSA's id for the first selector of profile "bench"


def _enforced_bid(heard: list[Heard], since: float, bid: int) -> float | None:
    """When both nodes had applied a document published after `since` that forwards
    POLICY_ID to `bid` (the later of the two statuses)."""
    times = []
    for node in (a.HA_NODE, a.MR_NODE):
        versions = {
            h.message.version
            for h in heard
            if h.at >= since
            and isinstance(h.message, PolicySent)
            and h.message.node == node
            and h.message.bid_of(POLICY_ID) == bid
        }
        hit = next(
            (
                h.at
                for h in heard
                if h.at >= since
                and isinstance(h.message, PolicyStatus)
                and h.message.node == node
                and h.message.result == "applied"
                and (h.message.requested_version or h.message.version) in versions
            ),
            None,
        )
        if hit is None:
            return None
        times.append(hit)
    return max(times)


def _stages(heard: list[Heard], since: float, bid: int, decision_topic: str) -> dict[str, float]:
    """Where one reaction's time went, as the bus shows it: report -> the NSA's decision
    record; decision -> the gateway's documents on the policy topics (the SOAP call and the
    gateway); documents -> the later worker status (each worker's apply). Seconds; a stage
    missing from the bus is left out."""
    decided = next((h.at for h in heard if h.at >= since and h.topic == decision_topic), None)
    documents = [
        h.at
        for h in heard
        if h.at >= since
        and isinstance(h.message, PolicySent)
        and h.message.bid_of(POLICY_ID) == bid
    ]
    enforced = _enforced_bid(heard, since, bid)
    stages: dict[str, float] = {}
    if decided is not None:
        stages["nsa"] = decided - since
        if documents:
            stages["gateway"] = max(min(documents), decided) - decided
    if documents and enforced is not None:
        stages["workers"] = enforced - min(documents)
    return stages


def _on_eth1(live: runner.Live) -> float | None:
    """When the class was first enforced on eth1 (BID 2) at both nodes, at any time of the
    session: with the monitor running, the NSA may decide before the session is handed over."""
    return _enforced_bid(live.recorder.all(), 0.0, 2)


def idle_rate(live: runner.Live, seconds: float = 2.0) -> float:
    """Policy documents per second while nothing changes (a healthy NSA sends none)."""
    start = time.monotonic()
    time.sleep(seconds)
    sent = [h for h in live.recorder.since(start) if isinstance(h.message, PolicySent)]
    return len(sent) / seconds


def _wait_for(
    what: str, check: Callable[[], float | None], timeout_s: float, live: runner.Live
) -> float:
    """Poll `check` until it gives a time; a service that died ends the wait with its log."""
    deadline = time.monotonic() + timeout_s
    while (found := check()) is None:
        live.supervisor.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout_s:g} s")
        time.sleep(0.002)
    return found


# The measures -------------------------------------------------------------------------------


def measure_b(count: int, out: Path, say: Callable[[str], None], pipe: str) -> list[float]:
    """Carrier loss on eth1 -> first packets on eth0 (PREM fallback), `count` times."""
    options = _options("reaction-b", Decider.SOAP, NsaConfig(), out, pipe)
    samples: list[float] = []
    with runner.session(options, say, skip=frozenset({"http-server@cn"})) as live:
        SoapStub(live.settings.gateway_url).call(
            "Install", _install(UDP_POLICY)
        )  # BID 2, fallback 1
        router = access.attached_to(live.bed, "eth1")
        assert router is not None
        switch = LinkSwitch(live.bed.ns(router), a.mr_link("eth1").port)
        try:
            with udp_stream(live.bed.ns("mnn")), TxWatch(live.bed.ns("mr"), ("eth0", "eth1")) as w:
                for trial in range(count):
                    if not w.flowing("eth1", PPS // 200, 0.02, 10):
                        raise TimeoutError(f"trial {trial}: the stream is not on eth1")
                    down = switch.set(up=False)
                    hit = w.first_rise("eth0", down, 3, 2.0)
                    access.set_carrier(live.bed, "eth1", up=True)  # and its fe80::1 again
                    if hit is None:
                        raise TimeoutError(f"trial {trial}: nothing on eth0 within 2 s")
                    samples.append(hit - down)
                    live.supervisor.check_alive()
        finally:
            switch.close()
    return samples


def _install(policy: dict[str, Any]) -> Any:
    from services.contracts.policy import Install, Policy

    return Install(policies=(Policy.model_validate(policy),))


class MetricsPlayer:
    """Plays the monitor: publishes both links' metrics every 0.5 s and on demand."""

    def __init__(self, live: runner.Live) -> None:
        self.live = live
        self.rtt = {"eth0": 10.0, "eth1": 10.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics", daemon=True)
        self._thread.start()

    def publish(self, interface: str) -> float:
        """Publish one link's metrics now; return when it was handed to the client."""
        link = a.mr_link(interface)
        message = LinkMetrics(
            sender=a.MR_NODE,
            interface=interface,
            bid=link.bid,
            technology=link.technology,
            rtt_ms=self.rtt[interface],
            jitter_ms=0.5,
            loss=0.0,
            cost_per_mb=0.0,
        )
        topic = self.live.recorder.topics.link_metrics(a.MR_NODE, interface)
        started = time.monotonic()
        self.live.recorder.client.publish(topic, encode(message), qos=0)
        return started

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for interface in self.rtt:
                self.publish(interface)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)


#: per-stage samples of part (a), filled by `measure_a` (seconds)
STAGES_A: dict[str, list[float]] = {}


def measure_a(count: int, out: Path, say: Callable[[str], None], pipe: str) -> list[float]:
    """eth1's RTT over the class's bound and back, `count` times each way: from publishing
    the metrics to both nodes applying the document that moves the class (and, in
    `STAGES_A`, where each reaction's time went)."""
    options = _options("reaction-a", Decider.NSA, _nsa_config({"max_delay_ms": 100}), out, pipe)
    samples: list[float] = []
    STAGES_A.clear()
    skip = frozenset({"http-server@cn", "monitor@mr"})
    with runner.session(options, say, skip=skip) as live:
        player = MetricsPlayer(live)
        decision_topic = f"{live.recorder.topics.root}/mr/{a.MOBILE_ROUTER}/decision"
        try:
            _wait_for("the class on eth1", lambda: _on_eth1(live), 30, live)
            _warn_if_chatty(idle_rate(live), say)
            for trial in range(count):
                for rtt, bid in ((500.0, 1), (10.0, 2)):  # over the bound (eth0), then back
                    player.rtt["eth1"] = rtt
                    sent = player.publish("eth1")

                    def moved(since: float = sent, to: int = bid) -> float | None:
                        return _enforced_bid(live.recorder.since(since), since, to)

                    samples.append(_wait_for(f"trial {trial} enforcement", moved, 5, live) - sent)
                    heard = live.recorder.since(sent)
                    for stage, seconds in _stages(heard, sent, bid, decision_topic).items():
                        STAGES_A.setdefault(stage, []).append(seconds)
                live.supervisor.check_alive()
        finally:
            player.close()
    return samples


def measure_c(count: int, out: Path, say: Callable[[str], None], pipe: str) -> list[float]:
    """eth1's care-of address changes -> the NSA's reaction enforced (or decided)."""
    options = _options("reaction-c", Decider.NSA, _nsa_config({}), out, pipe)
    samples: list[float] = []
    addresses = (a.care_of("ar2", 3), a.care_of("ar2", 2))
    with (
        runner.session(options, say, skip=frozenset({"http-server@cn"})) as live,
        Netlink(live.bed.ns("mr")) as mr,
    ):
        _wait_for("the class on eth1", lambda: _on_eth1(live), 30, live)
        _warn_if_chatty(idle_rate(live), say)
        decision = f"{live.recorder.topics.root}/mr/{a.MOBILE_ROUTER}/decision"
        for trial in range(count):
            new = addresses[trial % 2]
            live.bed.addr("mr", "eth1", f"{new}/64")
            old = [x for x in access.global_addresses(live.bed, "eth1") if x.split("/")[0] != new]
            # Timed at the netlink request, from a thread in the MR's namespace (an `ip`
            # process would add its own start-up, 5-10 ms, to every sample).
            changed = remove_addresses(mr, "eth1", old)

            def reacted(since: float = changed) -> float | None:
                heard = live.recorder.since(since)
                moved = _enforced_bid(heard, since, 1)  # off the link in handover
                if moved is not None:
                    return moved
                decided = next((h.at for h in heard if h.topic == decision), None)
                quiet = decided is not None and time.monotonic() - decided > 0.5
                return decided if quiet else None

            samples.append(_wait_for(f"trial {trial} reaction", reacted, 5, live) - changed)
            time.sleep(0.3)  # the return from the handover, before the next one
            live.supervisor.check_alive()
    return samples


BROWNOUT_THRESHOLD_MS = 50.0
BROWNOUT_STEP_S = 0.15


def measure_d(count: int, out: Path, say: Callable[[str], None], pipe: str) -> list[float]:
    """A brownout's onset -> the monitor's report on the bus, `count` times: one protected
    link probed at 10 Hz (UDP) whose peer starts answering 150 ms late (the delaying probe
    responder; the kernels here have no netem), threshold 50 ms. Timed from the step to the
    first report over the threshold reaching a subscriber; the step's own 150 ms included
    (no probe can show a delay before it has waited it)."""
    from labs.monitor import BusRecorder, ar_address, monitor_lab, monitor_process
    from services.contracts.settings import BrokerSettings
    from services.monitor.responder import DelayResponder

    del pipe  # no pipes here: the monitor and its peer only
    out.mkdir(parents=True, exist_ok=True)
    broker = BrokerSettings(topic_root=f"bench-{uuid.uuid4().hex[:10]}/multinet/v1")
    port = 50009
    links = [
        {
            "interface": "eth0",
            "bid": 1,
            "technology": "wlan",
            "protected": True,
            "brownout_delay_ms": BROWNOUT_THRESHOLD_MS,
            "probe": {"kind": "udp", "target": str(ar_address(0)), "port": port},
        }
    ]
    samples: list[float] = []
    with monitor_lab(links=1) as lab:
        config = lab.config(out / "monitor.toml", broker, links=links, probe_timeout_s=1.0)
        responder = DelayResponder("::", port)

        def bind() -> None:  # this thread only: the socket stays in the AR's namespace
            netns.enter(lab.ar(0))
            responder.open()

        opener = threading.Thread(target=bind)
        opener.start()
        opener.join(10)
        responder.start()
        try:
            with (
                monitor_process(config, lab, log=out / "monitor.log"),
                BusRecorder(broker) as recorder,
            ):
                for _ in range(count):
                    recorder.wait_for(
                        LinkMetrics,
                        lambda m: m.rtt_ms is not None and m.rtt_ms < 20,
                        timeout=20,
                    )
                    time.sleep(1.0)  # late answers of the last step settle
                    recorder.forget()
                    step = time.monotonic()
                    responder.delay_s = BROWNOUT_STEP_S
                    arrived, _ = recorder.wait_for(
                        LinkMetrics,
                        lambda m: (m.rtt_ms or 0.0) > BROWNOUT_THRESHOLD_MS,
                        timeout=5,
                    )
                    samples.append(arrived - step)
                    responder.delay_s = 0.0
                    recorder.forget()
        finally:
            responder.stop()
    return samples


def _warn_if_chatty(rate: float, say: Callable[[str], None]) -> None:
    if rate > 1.0:
        say(
            f"warning: the NSA sends {rate:.0f} policy documents/s while nothing changes; "
            "timings pair each status with the document that moved the class, but the load "
            "slows everything down"
        )


# Report -------------------------------------------------------------------------------------


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50, p99 and max in milliseconds."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(p99 * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
        "n": len(ordered),
    }


def _quiet(line: str) -> None:
    if line.startswith("warning"):
        print(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.reaction", description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument(
        "--only",
        default="a,b,c,d,p",
        help="comma-separated parts (a, b, c, d; p: bench.pipes)",
    )
    parser.add_argument(
        "--pipe",
        choices=["auto", *capabilities.PIPE_KINDS],
        default="auto",
        help="pipe kind of the test beds (auto: the first this kernel has)",
    )
    default_out = Path(f"/tmp/multinet-reaction-{os.getpid()}")
    parser.add_argument("--out", type=Path, default=default_out, help="run directories")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.reaction needs root (it builds the test bed in namespaces)", file=sys.stderr)
        return 2
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    try:
        kind = runner.pipe_kind(args.pipe)
    except capabilities.MissingCapability as exc:
        print(f"bench.reaction: {exc}", file=sys.stderr)
        return 2
    results: dict[str, Any] = {}
    forwarding: dict[str, Any] | None = None
    measures = {"a": measure_a, "b": measure_b, "c": measure_c, "d": measure_d}
    for part in parts:
        if part == "p":
            print("(p) forwarding through one pipe, per pipe kind this kernel has ...")
            forwarding = pipes_bench.measure(seconds=2.0, reps=3, senders=2)
            continue
        print(f"({part}) {TITLES[part]}: {args.count} repetitions ({kind} pipes) ...")
        out = args.out / f"{part}-{uuid.uuid4().hex[:6]}"
        try:
            samples = measures[part](args.count, out, _quiet, kind)
        except (RuntimeError, TimeoutError) as exc:  # a dead service, a missed deadline
            print(f"({part}) failed: {exc}\n  run directory: {out}")
            results[part] = {"failed": str(exc)[:2000], "run_dir": str(out)}
            continue
        results[part] = {
            **percentiles(samples),
            "target_p99_ms": TARGETS_MS[part],
            "samples_ms": [round(x * 1000, 2) for x in samples],
        }
    failed = False
    print(f"\nreaction times on the test bed with {kind} pipes:")
    print(f"{'part':5} {'what':50} {'p50':>9} {'p99':>9} {'max':>9} {'target p99':>11}")
    for part, row in results.items():
        if "failed" in row:
            failed = True
            print(f"({part})  {TITLES[part]:50} {'FAILED (above)':>41}")
            continue
        ok = row["p99_ms"] < row["target_p99_ms"]
        failed |= not ok
        verdict = "ok" if ok else "MISSED"
        print(
            f"({part})  {TITLES[part]:50} {row['p50_ms']:7.1f}ms {row['p99_ms']:7.1f}ms "
            f"{row['max_ms']:7.1f}ms {'<':>3}{row['target_p99_ms']:5.0f} ms {verdict}"
        )
    if "a" in results and STAGES_A:
        print("\n(a) where the time goes (as the bus shows it; p50 / p99 ms):")
        for stage, what in (
            ("nsa", "report -> the NSA's decision record"),
            ("gateway", "decision -> documents on the bus (SOAP call, gateway)"),
            ("workers", "documents -> the later of the two statuses (apply)"),
        ):
            if stage in STAGES_A:
                row = percentiles(STAGES_A[stage])
                print(f"  {what:55} {row['p50_ms']:7.1f} {row['p99_ms']:7.1f}")
        results["a"]["stages"] = {k: percentiles(v) for k, v in STAGES_A.items()}
    if forwarding is not None:
        print("\n(p) forwarding through one pipe (small UDP datagrams, median pkt/s):")
        print(pipes_bench.table(forwarding))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "reaction.json"
    document = {"count": args.count, "pipe_kind": kind, "results": results, "pipes": forwarding}
    path.write_text(json.dumps(document, indent=1) + "\n")
    print(f"\nwritten: {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
