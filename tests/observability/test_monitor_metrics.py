"""The link monitor (its own process, a namespace lab, the real broker) exports each link's state.

RTT, jitter and loss gauges come from the measured probes; a peer taking its end down must show
as link-up 0 within the state machine's time. Its log lines are JSON records with the node id.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from labs.monitor import MonitorLab, monitor_lab
from services.contracts.settings import BrokerSettings
from services.ports import free_port
from tests.faults.procs import Service
from tests.observability.scrape import Samples, wait_scrape

pytestmark = [pytest.mark.kernel, pytest.mark.broker]
ETH0 = {"interface": "eth0", "bid": "1"}
ETH1 = {"interface": "eth1", "bid": "2"}


@pytest.fixture
def lab(make_netns: object) -> Iterator[MonitorLab]:
    # make_netns only asserts root and iproute2 (CI turns their absence into a failure).
    with monitor_lab(links=2) as built:
        yield built


def _measured(samples: Samples) -> bool:
    """RTT and jitter known for eth0 (jitter needs two answered probes)."""
    values = [samples.get(f"multinet_monitor_{name}_seconds", **ETH0) for name in ("rtt", "jitter")]
    return all(value is not None and not math.isnan(value) for value in values)


def test_link_gauges_follow_probes_and_carrier(
    lab: MonitorLab, broker: tuple[str, int], topic_root: str, tmp_path: Path
) -> None:
    port = free_port()
    settings = BrokerSettings(host=broker[0], port=broker[1], topic_root=topic_root)
    config = lab.config(
        tmp_path / "monitor.toml",
        settings,
        interval_s=0.1,
        probe_timeout_s=0.3,
        metrics_listen=f"127.0.0.1:{port}",
    )
    argv = [sys.executable, "-m", "services.cli", "monitor", "--config", str(config)]
    monitor = Service([*argv, "--netns", lab.mr, "--log-json"], tmp_path / "monitor.log")
    monitor.start()
    try:
        up = wait_scrape(port, lambda s: _measured(s) and s.get("multinet_broker_connected") == 1)
        assert up.labelled("multinet_monitor_link_up", **ETH0) == 1
        assert up.labelled("multinet_monitor_link_up", **ETH1) == 1
        assert 0 < up.labelled("multinet_monitor_rtt_seconds", **ETH0) < 0.1
        assert up.labelled("multinet_monitor_loss_ratio", **ETH0) == 0
        assert up.labelled("multinet_monitor_jitter_seconds", **ETH0) >= 0
        published = "multinet_monitor_messages_published_total"
        assert up.labelled(published, kind="link-state") >= 2
        assert up.labelled(published, kind="link-metrics") >= 1

        lab.set_peer(1, up=False)
        down = wait_scrape(port, lambda s: s.get("multinet_monitor_link_up", **ETH1) == 0)
        assert down.labelled("multinet_monitor_link_up", **ETH0) == 1
        assert down.labelled(published, kind="link-state") > up.labelled(
            published, kind="link-state"
        )
    finally:
        assert monitor.stop() == 0, monitor.text()[-3000:]
    records = monitor.records()
    assert records
    assert {record["node"] for record in records} == {"mr1"}
