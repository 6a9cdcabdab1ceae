"""MetricsBatch against a fake clock: when a node's periodic link metrics go out together."""

from __future__ import annotations

import pytest

from services.contracts.messages import NODE_METRICS_LINKS, LinkMetrics, NodeMetrics, decode, encode
from services.monitor.batch import MetricsBatch

NODE = "mr1"
LINKS = ("eth0", "eth1", "eth2")
WALL = 1_700_000_000.0


def _report(interface: str, sequence: int = 1, rtt_ms: float | None = 10.0) -> LinkMetrics:
    bid = int(interface.removeprefix("eth")) + 1
    return LinkMetrics(
        sender=NODE,
        timestamp=WALL - 0.5,  # a report's own time, not the message's
        sequence=sequence,
        interface=interface,
        bid=bid,
        technology="lte",
        rtt_ms=rtt_ms,
    )


def _batch(*links: str, period: float = 1.0) -> MetricsBatch:
    return MetricsBatch(NODE, dict.fromkeys(links or LINKS, period))


def _interfaces(message: NodeMetrics) -> list[str]:
    return [entry.interface for entry in message.links]


def test_three_links_reporting_in_a_period_make_exactly_one_message() -> None:
    batch = _batch()
    assert batch.add(_report("eth0"), periodic=True, now=10.0, wall=WALL) == []
    assert batch.add(_report("eth1"), periodic=True, now=10.01, wall=WALL) == []
    assert batch.deadline == pytest.approx(11.0)
    (message,) = batch.add(_report("eth2"), periodic=True, now=10.02, wall=WALL + 0.02)
    assert _interfaces(message) == ["eth0", "eth1", "eth2"]
    assert message.sender == NODE
    assert message.timestamp == WALL + 0.02
    assert message.sequence == 1
    # Each entry is the link's own report, sequence and timestamp included.
    assert message.links[1] == _report("eth1")
    assert batch.pending == ()
    assert batch.deadline is None
    assert batch.due(11.0, WALL + 1) == []  # the deadline went with the flush
    # The message is a valid contract message on the wire.
    assert decode(NodeMetrics, encode(message)) == message


def test_entries_follow_the_configured_order_and_messages_count_up() -> None:
    batch = _batch()
    for name in ("eth2", "eth0"):
        batch.add(_report(name), periodic=True, now=0.0, wall=WALL)
    (first,) = batch.add(_report("eth1"), periodic=True, now=0.0, wall=WALL)
    assert _interfaces(first) == list(LINKS)
    out: list[NodeMetrics] = []
    for name in LINKS:
        out += batch.add(_report(name), periodic=True, now=1.0, wall=WALL)
    (second,) = out
    assert (first.sequence, second.sequence) == (1, 2)


def test_a_link_that_stops_reporting_is_left_out_at_the_deadline() -> None:
    batch = _batch()
    batch.add(_report("eth0"), periodic=True, now=5.0, wall=WALL)
    batch.add(_report("eth1"), periodic=True, now=5.1, wall=WALL)
    # eth2 says nothing: the batch waits one period after the first report, no longer.
    assert batch.deadline == pytest.approx(6.0)
    assert batch.due(5.99, WALL) == []
    (message,) = batch.due(6.0, WALL + 1)
    assert _interfaces(message) == ["eth0", "eth1"]
    assert message.timestamp == WALL + 1
    assert batch.pending == ()
    assert batch.due(7.0, WALL + 2) == []


def test_the_shortest_wait_of_the_waiting_links_sets_the_deadline() -> None:
    # A metered link reports every 10 s, the other every second: the fast link's report is
    # not held for the metered one's period.
    batch = MetricsBatch(NODE, {"eth0": 10.0, "eth1": 1.0, "eth2": 1.0})
    batch.add(_report("eth0"), periodic=True, now=0.0, wall=WALL)
    assert batch.deadline == pytest.approx(10.0)
    batch.add(_report("eth1"), periodic=True, now=0.5, wall=WALL)
    assert batch.deadline == pytest.approx(1.5)
    (message,) = batch.due(1.5, WALL)
    assert _interfaces(message) == ["eth0", "eth1"]


def test_a_material_change_goes_out_at_once_with_what_waits() -> None:
    batch = _batch()
    batch.add(_report("eth0"), periodic=True, now=0.0, wall=WALL)
    batch.add(_report("eth2"), periodic=True, now=0.0, wall=WALL)
    brownout = _report("eth1", sequence=7, rtt_ms=180.0)
    (message,) = batch.add(brownout, periodic=False, now=0.2, wall=WALL + 0.2)
    assert _interfaces(message) == ["eth0", "eth1", "eth2"]
    assert message.links[1] == brownout
    assert batch.pending == ()
    assert batch.deadline is None


def test_a_material_change_alone_is_not_delayed() -> None:
    batch = _batch()
    (message,) = batch.add(_report("eth1", rtt_ms=300.0), periodic=False, now=0.0, wall=WALL)
    assert _interfaces(message) == ["eth1"]


def test_a_material_change_replaces_its_own_links_waiting_report() -> None:
    batch = _batch()
    batch.add(_report("eth0", sequence=1, rtt_ms=10.0), periodic=True, now=0.0, wall=WALL)
    (message,) = batch.add(
        _report("eth0", sequence=2, rtt_ms=90.0), periodic=False, now=0.1, wall=WALL
    )
    assert [(e.interface, e.sequence, e.rtt_ms) for e in message.links] == [("eth0", 2, 90.0)]


def test_the_same_link_twice_before_a_flush_keeps_the_latest() -> None:
    batch = _batch()
    batch.add(_report("eth0", sequence=1, rtt_ms=10.0), periodic=True, now=0.0, wall=WALL)
    batch.add(_report("eth0", sequence=3, rtt_ms=20.0), periodic=True, now=0.9, wall=WALL)
    assert batch.pending == ("eth0",)
    assert batch.deadline == pytest.approx(1.0)  # the first report's wait is not extended
    (message,) = batch.due(1.0, WALL)
    assert [(e.sequence, e.rtt_ms) for e in message.links] == [(3, 20.0)]


def test_more_links_than_one_message_holds_go_out_as_several() -> None:
    names = [f"eth{index}" for index in range(NODE_METRICS_LINKS + 3)]
    batch = _batch(*names)
    out: list[NodeMetrics] = []
    for name in names:
        out += batch.add(_report(name), periodic=True, now=0.0, wall=WALL)
    assert [len(message.links) for message in out] == [NODE_METRICS_LINKS, 3]
    assert [i for message in out for i in _interfaces(message)] == names
    assert [message.sequence for message in out] == [1, 2]
    for message in out:  # each one valid as the contract has it
        assert decode(NodeMetrics, encode(message)) == message


def test_a_smaller_limit_splits_sooner() -> None:
    batch = MetricsBatch(NODE, dict.fromkeys(LINKS, 1.0), limit=2)
    batch.add(_report("eth0"), periodic=True, now=0.0, wall=WALL)
    batch.add(_report("eth1"), periodic=True, now=0.0, wall=WALL)
    out = batch.add(_report("eth2"), periodic=True, now=0.0, wall=WALL)
    assert [_interfaces(message) for message in out] == [["eth0", "eth1"], ["eth2"]]


def test_flush_sends_whatever_waits_and_nothing_when_empty() -> None:
    batch = _batch()
    assert batch.flush(WALL) == []
    batch.add(_report("eth1"), periodic=True, now=0.0, wall=WALL)
    (message,) = batch.flush(WALL)
    assert _interfaces(message) == ["eth1"]
    assert batch.flush(WALL) == []


@pytest.mark.parametrize(
    ("periods", "limit", "why"),
    [
        ({}, NODE_METRICS_LINKS, "at least one link"),
        ({"eth0": 0.0}, NODE_METRICS_LINKS, "positive: eth0"),
        ({"eth0": 1.0}, NODE_METRICS_LINKS + 1, "limit"),
        ({"eth0": 1.0}, 0, "limit"),
    ],
)
def test_bad_batches_are_refused(periods: dict[str, float], limit: int, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        MetricsBatch(NODE, periods, limit=limit)


def test_reports_of_another_link_or_node_are_refused() -> None:
    batch = _batch("eth0")
    with pytest.raises(ValueError, match="eth1"):
        batch.add(_report("eth1"), periodic=True, now=0.0, wall=WALL)
    stranger = _report("eth0").model_copy(update={"sender": "mr2"})
    with pytest.raises(ValueError, match="mr2"):
        batch.add(stranger, periodic=True, now=0.0, wall=WALL)
    assert batch.pending == ()
