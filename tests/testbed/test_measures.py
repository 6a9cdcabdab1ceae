"""The measurements, from synthetic counter samples, bus messages and stream records (pure)."""

from __future__ import annotations

from services.contracts.messages import PolicyStatus
from services.testbed import analysis, conditions, report, tcpstats
from services.testbed.counters import Counts, Sample
from services.testbed.recorder import Heard, PolicySent
from services.testbed.scenario import Enforced, Flows

RATE = 20  # stream packets per 100 ms in each direction


def _samples(switch_at: float, start: float = 0.0, end: float = 3.0) -> list[Sample]:
    """Counters every 100 ms of a stream that leaves eth0 for eth1 at `switch_at`, with one
    signalling packet per interval on each link."""
    out = []
    counts = {"eth0": [0, 0], "eth1": [0, 0]}
    t = start
    while t <= end + 1e-9:
        out.append(
            Sample(
                round(t, 3),
                {name: Counts(rx, tx, rx * 1400, tx * 80) for name, (rx, tx) in counts.items()},
            )
        )
        nxt = t + 0.1
        before = max(0.0, min(nxt, switch_at) - t) / 0.1
        for name, share in (("eth0", before), ("eth1", 1 - before)):
            counts[name][0] += round(RATE * share) + 1
            counts[name][1] += round(RATE * share / 4) + 1
        t = nxt
    return out


def test_switch_time_is_placed_inside_the_mixed_interval() -> None:
    samples = _samples(switch_at=1.23)
    moved = conditions.switch_time(samples, 1.0, "eth1", "rx")
    assert moved is not None
    assert abs(moved - 1.23) < 0.03


def test_switch_time_ignores_signalling_on_an_idle_link() -> None:
    samples = _samples(switch_at=10.0)  # never moves within the samples
    assert conditions.switch_time(samples, 0.5, "eth1", "rx") is None


def test_flows_condition_holds_after_the_move_only() -> None:
    samples = _samples(switch_at=1.5)
    flows = Flows(until="flows", interface="eth1")
    met = conditions.flows(flows, 1.0, samples)
    assert met is not None
    assert 1.9 <= met.at <= 2.2
    assert abs(met.detail["moved_at_rx"] - 1.5) < 0.05
    assert conditions.flows(flows, 1.0, samples[:13]) is None  # up to 1.2 s: still on eth0


def _status(node: str, result: str, version: int) -> PolicyStatus:
    return PolicyStatus(
        sender=node,
        node=node,
        mobile_router="mr1",
        direction="downlink" if node == "ha1" else "uplink",
        result=result,
        version=version,
        requested_version=version if result == "applied" else None,
    )


def test_enforced_waits_for_every_named_node_after_the_reference() -> None:
    heard = [
        Heard(0.4, "x/policy", PolicySent("ha1", 1, "install", 1), False),
        Heard(0.5, "x/status", _status("ha1", "applied", 1), False),
        Heard(1.1, "x/policy", PolicySent("ha1", 2, "update", 1), False),
        Heard(1.1, "x/policy", PolicySent("mr1", 2, "update", 1), False),
        Heard(1.15, "x/status", _status("mr1", "applied", 1), False),  # answers an older one
        Heard(1.2, "x/status", _status("mr1", "fallback", 1), False),
        Heard(1.3, "x/status", _status("ha1", "applied", 2), False),
        Heard(1.4, "x/status", _status("mr1", "applied", 2), False),
    ]
    both = Enforced(until="enforced", nodes=("ha", "mr"))
    met = conditions.check(both, 1.0, heard, [])
    assert met is not None
    assert met.at == 1.4
    assert met.detail["ha"]["version"] == 2
    assert conditions.check(both, 1.0, heard[:7], []) is None


def test_stream_stats_find_the_longest_gap() -> None:
    reads = [[10.0 + 0.02 * k, 5000] for k in range(100)]
    reads.append([reads[-1][0] + 0.35, 5000])
    stats = analysis.stream_stats({"reads": reads, "error": ""}, t0=10.0)
    assert stats["bytes"] == 101 * 5000
    assert abs(stats["longest_gap_ms"] - 350) < 1
    assert stats["gaps_over_200ms"] == [{"at_s": 1.98, "ms": 350.0}]


def test_tcp_counters_and_ss_parse() -> None:
    snmp = (
        "Tcp: RtoAlgorithm RetransSegs OutSegs\nTcp: 1 7 900\n"
        "TcpExt: TCPTimeouts TCPFastRetrans\nTcpExt: 0 6\n"
    )
    assert tcpstats.parse_proc(snmp) == {
        "RtoAlgorithm": 1,
        "RetransSegs": 7,
        "OutSegs": 900,
        "TCPTimeouts": 0,
        "TCPFastRetrans": 6,
    }
    line = "cubic wscale:10,10 rto:204 retrans:0/12 rcv_space:14280"
    assert tcpstats.retransmitted(line) == 12
    assert tcpstats.retransmitted("cubic rto:204") is None


def test_the_table_names_each_step_and_its_delays() -> None:
    result = {
        "scenario": "figure7",
        "decider": "soap",
        "backend": "nftables",
        "failure": None,
        "steps": [
            {
                "label": "t1",
                "title": "t1: binds HTTP to eth1",
                "t_s": 6.0,
                "action": {"name": "install-policies", "took_ms": 60.0, "versions": {"ha1": 1}},
                "delivery": {"ha": {"enforced_ms": 22.0}, "mr": {"enforced_ms": 25.0}},
                "conditions": [],
            },
            {
                "label": "t2",
                "title": "t2: enforced at the HA",
                "t_s": 6.02,
                "conditions": [
                    {
                        "until": "enforced",
                        "after_ms": 22.0,
                        "nodes": {"ha": {"ms": 22.0, "version": 1}},
                    }
                ],
            },
        ],
        "stream": {
            "bytes": 2_000_000,
            "duration_s": 8.0,
            "goodput_bps": 2e6,
            "longest_gap_ms": 64.0,
            "longest_gap_at_s": 14.0,
        },
        "tcp": {"counters": {"RetransSegs": 3, "OutSegs": 900}},
    }
    text = report.table(result)
    assert "t1       6.00  binds HTTP to eth1" in text
    assert "ha enforced +22 ms; mr enforced +25 ms" in text
    assert "ha enforced +22 ms (v1)" in text
    assert "longest gap 64 ms at 14.00 s" in text
    assert "3 segments retransmitted" in text


def test_switch_time_after_an_outage_is_placed_where_the_flow_resumed() -> None:
    """The old link lost its carrier at 1.0 s, the flow resumed on eth1 at 1.25 s."""
    samples, rx = [], {"eth0": 0, "eth1": 0}
    for k in range(31):
        t = k / 10
        samples.append(Sample(t, {n: Counts(c, 0, 0, 0) for n, c in rx.items()}))
        rx["eth0"] += RATE if t < 1.0 else 0
        rx["eth1"] += RATE if t >= 1.3 else (RATE // 2 if t >= 1.2 else 0)
    moved = conditions.switch_time(samples, 1.0, "eth1", "rx")
    assert moved is not None
    assert abs(moved - 1.25) < 0.02


def test_first_packets_from_the_10ms_samples_ignore_a_lone_probe() -> None:
    """eth1 gets a probe at 1.02 s and the stream from 1.071 s (200 packets/s)."""
    samples, rx = [], {"eth0": 0, "eth1": 0}
    for k in range(200):
        t = round(k * 0.01, 3)
        samples.append(Sample(t, {n: Counts(c, 0, 0, 0) for n, c in rx.items()}))
        rx["eth1"] += (1 if t == 1.02 else 0) + (2 if t >= 1.07 else 0)
        rx["eth0"] += 2 if t < 1.0 else 0
    moved = conditions.first_packets(samples, 1.0, "eth1", "rx")
    assert moved == 1.07


def test_counters_parse_an_rtm_newlink_answer() -> None:
    import struct

    from services.testbed.counters import parse_stats64

    stats = struct.pack("=HH", 4 + 8 * 23, 23) + struct.pack("=23Q", 11, 22, 33, 44, *[0] * 19)
    name = struct.pack("=HH", 9, 3) + b"eth0\x00" + b"\x00" * 3
    body = struct.pack("=BxHiII", 0, 1, 5, 0, 0) + name + stats
    message = struct.pack("=IHHII", 16 + len(body), 16, 0, 1, 0) + body
    counts = parse_stats64(message)
    assert counts == Counts(11, 22, 33, 44)
    assert parse_stats64(struct.pack("=IHHII", 36, 2, 0, 1, 0) + b"\x00" * 20) is None
