"""A node's links reported in one `NodeMetrics` (a monitor's `batch_metrics`) are taken as the
same links' own reports would be: in the engine, and through a real NSA process whose metrics
connection (its child process) reads them from the real broker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.contracts.messages import BindingEventKind, NodeMetrics, encode
from services.contracts.settings import BrokerSettings
from tests.nsa.busbed import BusDriver, nsa_process, tail, ticking_driver, wait_until
from tests.nsa.busbed import write_settings as write_nsa_settings
from tests.nsa.enginebed import TOPICS, Bed, make_bed
from tests.nsa.factories import MR, MR_NODE, metrics

K = BindingEventKind
LINKS = {1: {"rtt_ms": 20.0}, 2: {"rtt_ms": 200.0}}


def _node_metrics(bed: Bed, links: dict[int, dict[str, float]]) -> NodeMetrics:
    entries = tuple(metrics(bid, timestamp=bed.now, **values) for bid, values in links.items())
    return NodeMetrics(sender=entries[0].sender, timestamp=bed.now, links=entries)


def _started(batched: bool) -> Bed:
    """A bed decided once from LINKS, reported per link or in one message per period."""
    bed = make_bed()
    for bid in LINKS:
        bed.binding(bid, K.REGISTERED)
    if batched:
        bed.feed(TOPICS.node_metrics(MR_NODE), _node_metrics(bed, LINKS))
    else:
        for bid, values in LINKS.items():
            bed.metrics(bid, **values)
    bed.at(bed.now + bed.settings.first_period_s)
    return bed


def test_one_node_message_is_taken_as_its_links_own_reports() -> None:
    per_link, batched = _started(batched=False), _started(batched=True)
    assert batched.engine.view_of(MR) == per_link.engine.view_of(MR)
    assert batched.bid() == per_link.bid() == 1
    assert batched.enforced() == (1, 1)
    # Link 1 degrades, reported in one message with link 2: the class moves as per link.
    for bed in (per_link, batched):
        bed.now += 1.0
    worse = {1: {"rtt_ms": 400.0}, 2: {"rtt_ms": 30.0}}
    batched.feed(TOPICS.node_metrics(MR_NODE), _node_metrics(batched, worse))
    for bid, values in worse.items():
        per_link.metrics(bid, **values)
    for bed in (per_link, batched):
        bed.at(bed.now + 60)  # past any dwell time
    assert batched.engine.view_of(MR) == per_link.engine.view_of(MR)
    assert batched.bid() == per_link.bid() == 2
    assert batched.engine.stats.inputs["node-metrics"] == 2
    assert per_link.engine.stats.inputs["node-metrics"] == 0


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda d: d["links"][1].update(sender="mr9"), id="entry-of-another-node"),
        pytest.param(lambda d: d["links"][1].update(interface="if1"), id="interface-twice"),
        pytest.param(lambda d: d["links"][1].update(rtt_ms=-1), id="one-bad-value"),
        pytest.param(lambda d: d.update(links=[]), id="no-links"),
        pytest.param(lambda d: d.update(links=d["links"] * 9), id="too-many-links"),
    ],
)
def test_a_message_with_one_bad_entry_applies_none_of_them(damage: object) -> None:
    bed = _started(batched=True)
    before = bed.engine.view_of(MR)
    bed.now += 1.0
    document = json.loads(encode(_node_metrics(bed, {1: {"rtt_ms": 500.0}, 2: {"rtt_ms": 25.0}})))
    damage(document)  # type: ignore[operator]
    refused = bed.engine.stats.refused
    bed.feed(TOPICS.node_metrics(MR_NODE), json.dumps(document).encode())
    assert bed.engine.stats.refused == refused + 1
    assert bed.engine.view_of(MR) == before, "a refused message changes nothing"
    bed.at(bed.now + 60)
    assert bed.bid() == 1


@pytest.fixture
def batched_driver(broker: tuple[str, int], topic_root: str) -> Iterator[BusDriver]:
    settings = BrokerSettings(host=broker[0], port=broker[1], topic_root=topic_root)
    with ticking_driver(settings, batched=True) as driver:
        yield driver


@pytest.mark.broker
def test_a_running_nsa_decides_from_node_messages_on_the_real_broker(
    batched_driver: BusDriver, tmp_path: Path
) -> None:
    driver = batched_driver
    routers = [{"id": f"mr{i}", "ha_node": f"ha{i}", "mr_node": f"mrn{i}"} for i in (1, 2)]
    config = write_nsa_settings(tmp_path / "nsa.yaml", driver.broker, routers)
    log = tmp_path / "nsa.log"
    with nsa_process(config, log):
        for router in routers:
            for bid, rtt in ((1, 20.0), (2, 60.0)):
                driver.metrics(router["mr_node"], bid, rtt_ms=rtt)
                driver.binding(router["id"], bid, K.REGISTERED)
        try:
            wait_until(
                lambda: all(driver.class_bid(r["id"]) == 1 for r in routers),
                "a first decision for each router from its node's messages",
                30,
            )
            driver.metrics("mrn1", 1, rtt_ms=400.0)  # mr1's WLAN degrades; mr2's does not
            wait_until(lambda: driver.class_bid("mr1") == 2, "mr1's class moved to BID 2", 30)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{tail(log)}") from exc
        assert driver.class_bid("mr2") == 1
