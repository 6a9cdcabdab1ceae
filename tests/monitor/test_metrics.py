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


def test_batched_links_set_their_gauges_and_count_one_message_per_batch() -> None:
    metrics = MonitorMetrics("mr1")
    value = metrics.registry.get_sample_value
    for interface, bid, rtt in (("eth0", 1, 10.0), ("eth1", 2, 30.0)):
        report = LinkMetrics(sender="mr1", interface=interface, bid=bid, technology="lte")
        metrics.record(report.model_copy(update={"rtt_ms": rtt}), published=False)
    metrics.batch_published()
    assert value("multinet_monitor_rtt_seconds", {"interface": "eth1", "bid": "2"}) == 0.03
    published = "multinet_monitor_messages_published_total"
    assert value(published, {"kind": "link-metrics"}) == 0
    assert value(published, {"kind": "node-metrics"}) == 1
