"""services/monitor/metrics.py: the gauges follow what the monitor published."""

from __future__ import annotations

import math

from services.contracts.messages import LinkMetrics, LinkState
from services.monitor.metrics import MonitorMetrics


def test_monitor_gauges_follow_the_published_messages() -> None:
    metrics = MonitorMetrics("mr1")
    value = metrics.registry.get_sample_value
    labels = {"interface": "eth0", "bid": "1"}
    metrics.record(LinkState(sender="mr1", interface="eth0", bid=1, up=False, carrier=False))
    metrics.record(
        LinkMetrics(sender="mr1", interface="eth0", bid=1, technology="wlan", rtt_ms=12.5)
    )
    assert value("multinet_monitor_link_up", labels) == 0
    assert value("multinet_monitor_rtt_seconds", labels) == 0.0125
    assert math.isnan(value("multinet_monitor_loss_ratio", labels) or 0.0)
    published = "multinet_monitor_messages_published_total"
    assert value(published, {"kind": "link-state"}) == 1
    assert value(published, {"kind": "link-metrics"}) == 1
