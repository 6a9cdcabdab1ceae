"""Two NSA replicas as their own processes on the real broker share the routers: each
router's decisions come from exactly one replica, the one the stable hash names, and
together they decide for every router."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from services.contracts.messages import BindingEventKind
from services.contracts.settings import BrokerSettings
from services.nsa.core.partition import owner
from tests.nsa.busbed import (
    BusDriver,
    nsa_process,
    tail,
    ticking_driver,
    wait_until,
    write_settings,
)

pytestmark = pytest.mark.broker
ROUTERS = [{"id": f"mr{i}", "ha_node": f"ha{i}", "mr_node": f"mrn{i}"} for i in range(8)]


@pytest.fixture
def driver(broker: tuple[str, int], topic_root: str) -> Iterator[BusDriver]:
    with ticking_driver(BrokerSettings(host=broker[0], port=broker[1], topic_root=topic_root)) as d:
        yield d


def test_two_replicas_split_the_routers_and_cover_them_all(
    driver: BusDriver, tmp_path: Path
) -> None:
    shares = {r["id"]: owner(r["id"], 2) for r in ROUTERS}
    assert set(shares.values()) == {0, 1}, "the test needs routers on both replicas"
    logs = [tmp_path / f"nsa-{i}.log" for i in (0, 1)]
    with ExitStack() as stack:
        for index in (0, 1):
            config = write_settings(
                tmp_path / f"nsa-{index}.yaml",
                driver.broker,
                ROUTERS,
                nsa={"name": f"nsa-{index}", "replicas": 2, "replica": index},
            )
            stack.enter_context(nsa_process(config, logs[index]))
        for router in ROUTERS:
            for bid, rtt in ((1, 20.0), (2, 60.0)):
                driver.metrics(router["mr_node"], bid, rtt_ms=rtt)
                driver.binding(router["id"], bid, BindingEventKind.REGISTERED)
        wait_until(
            lambda: all(driver.class_bid(r["id"]) == 1 for r in ROUTERS),
            "a decision for every router",
            30,
        )
        for router in ROUTERS:  # a handover everywhere: each owner decides again
            driver.binding(router["id"], 1, BindingEventKind.HANDOVER_STARTED)
        wait_until(
            lambda: all(driver.class_bid(r["id"]) == 2 for r in ROUTERS),
            "every router moved by its owner",
            30,
        )
    deciders: dict[str, set[str]] = {}
    for record in driver.decisions:
        deciders.setdefault(record.explanation.mobile_router, set()).add(record.sender)
    assert set(deciders) == {r["id"] for r in ROUTERS}, tail(*logs)
    for mobile_router, senders in deciders.items():
        assert senders == {f"nsa-{shares[mobile_router]}"}, (mobile_router, senders)
    for index, log in enumerate(logs):
        share = sum(1 for s in shares.values() if s == index)
        assert f"deciding for {share} of 8 mobile routers" in log.read_text()
