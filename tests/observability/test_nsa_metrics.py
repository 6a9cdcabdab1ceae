"""A real NSA replica (the `NsaService` `multinet nsa run` builds, dry-run delivery) exports
what it decides, fed by real reports on the real broker; read from /metrics over HTTP.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.contracts.messages import BindingEventKind, Presence
from services.contracts.settings import BrokerSettings
from services.nsa.service import NsaService
from services.nsa.settings import load_file
from services.ports import free_port
from tests.nsa.busbed import BusDriver, ticking_driver, wait_until, write_settings
from tests.observability.scrape import Samples, scrape, wait_scrape

pytestmark = pytest.mark.broker
MR, HA_NODE = "mr1", "ha1"
ROUTERS = [{"id": MR, "ha_node": HA_NODE, "mr_node": MR}]
DELIVERIES = "multinet_nsa_deliveries_total"


@pytest.fixture
def driver(broker: tuple[str, int], topic_root: str) -> Iterator[BusDriver]:
    with ticking_driver(BrokerSettings(host=broker[0], port=broker[1], topic_root=topic_root)) as d:
        yield d


def test_decisions_moves_deliveries_and_resyncs_reach_the_endpoint(
    driver: BusDriver, tmp_path: Path
) -> None:
    port = free_port()
    config = write_settings(
        tmp_path / "nsa.yaml",
        driver.broker,
        ROUTERS,
        nsa={
            "decision": {"dwell_s": 0.0, "margin": 0.05},
            "metrics_listen": f"127.0.0.1:{port}",
        },
    )
    service = NsaService(config, load_file(config))
    service.start()
    try:
        idle = wait_scrape(port, lambda s: s.get("multinet_broker_connected") == 1)
        assert idle.labelled("multinet_service_info", service="nsa", node="nsa-test") == 1
        assert idle["multinet_nsa_decisions_total"] == 0
        assert idle["multinet_nsa_inbox_depth"] >= 0

        driver.metrics(MR, 1, rtt_ms=20.0)
        driver.metrics(MR, 2, rtt_ms=60.0)
        for bid in (1, 2):
            driver.binding(MR, bid, BindingEventKind.REGISTERED)
        wait_until(lambda: driver.class_bid(MR) == 1, "a first decision")
        # One document per node for the first placement, or two if the NSA placed the class
        # once with BID 1 alone bound and once more when BID 2 joined (its fallback changed):
        # which one depends on how the broker interleaves the two binding events.
        wait_scrape(port, lambda s: s.labelled(DELIVERIES, result="applied") >= 2)
        first = _settled(port)
        placed = first.labelled(DELIVERIES, result="applied")
        assert placed in (2, 4), placed
        assert first["multinet_nsa_decisions_total"] >= 1
        assert first["multinet_nsa_moves_total"] == 0, "a first decision places, moves nothing"
        assert first["multinet_nsa_decision_seconds_count"] >= 1
        assert first.labelled("multinet_nsa_inputs_total", kind="metrics") >= 2
        assert first.labelled("multinet_nsa_inputs_total", kind="binding-event") >= 2
        assert first["multinet_nsa_resyncs_total"] == 0

        driver.metrics(MR, 1, rtt_ms=400.0)  # BID 2 is better now: the class moves
        wait_until(lambda: driver.class_bid(MR) == 2, "the move to BID 2")
        moved = wait_scrape(port, lambda s: s.labelled(DELIVERIES, result="applied") == placed + 2)
        assert moved["multinet_nsa_moves_total"] == 1
        assert moved["multinet_nsa_decisions_total"] > first["multinet_nsa_decisions_total"]

        # A worker that lost its state says hello at a version it was not given: it is in
        # doubt, and gets a full Install (both documents again, applied by the dry run).
        hello = Presence(sender=HA_NODE, node=HA_NODE, service="prem", online=True, version=99)
        driver.publish(driver.topics.presence(HA_NODE, "prem"), hello)
        resynced = wait_scrape(
            port, lambda s: s.labelled(DELIVERIES, result="applied") == placed + 4
        )
        assert resynced["multinet_nsa_resyncs_total"] == 1
        assert resynced.labelled(DELIVERIES, result="refused") == 0
        assert resynced.labelled(DELIVERIES, result="not-reached") == 0
        assert resynced["multinet_nsa_inbox_dropped_total"] == 0
        answered = resynced["multinet_nsa_decision_seconds_count"]
        assert answered >= 2, "the first decision and the move answered reports"
        assert _bucket(resynced, "10.0") == answered
    finally:
        service.stop()
    assert service.error is None
    with pytest.raises(OSError):
        scrape(port, timeout_s=1.0)  # the endpoint closes with the service


def _settled(port: int, quiet_s: float = 0.5) -> Samples:
    """The metrics once no decision or delivery has been added for `quiet_s`."""

    def key(s: Samples) -> tuple[float, float]:
        return s["multinet_nsa_decisions_total"], s.labelled(DELIVERIES, result="applied")

    last = scrape(port)
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = scrape(port)
        if key(now) == key(last):
            return now
        last = now
    raise AssertionError(f"the NSA kept deciding: {key(last)}")


def _bucket(samples: Samples, le: str) -> float:
    return samples.labelled("multinet_nsa_decision_seconds_bucket", le=le)
