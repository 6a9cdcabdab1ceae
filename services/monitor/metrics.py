"""The link monitor's Prometheus metrics: each link as last published (`services.metrics` holds
what every service exports and the exporter)."""

from __future__ import annotations

import math

from prometheus_client import Gauge

from services.contracts.messages import LinkMetrics, LinkState
from services.metrics import ServiceMetrics, counter_by


def _seconds(milliseconds: float | None) -> float:
    return math.nan if milliseconds is None else milliseconds / 1000


class MonitorMetrics(ServiceMetrics):
    """The link monitor's view of each link, as last published."""

    def __init__(self, node: str) -> None:
        super().__init__("monitor", node)
        reg = self.registry
        labels = ["interface", "bid"]
        self.link_up = Gauge(
            "multinet_monitor_link_up", "1 if the link is up, else 0.", labels, registry=reg
        )
        self.rtt = Gauge(
            "multinet_monitor_rtt_seconds", "Probe round-trip time.", labels, registry=reg
        )
        self.jitter = Gauge(
            "multinet_monitor_jitter_seconds", "Probe RTT jitter.", labels, registry=reg
        )
        self.loss = Gauge(
            "multinet_monitor_loss_ratio", "Probe loss over the window.", labels, registry=reg
        )
        self.probe_bytes = Gauge(
            "multinet_monitor_probe_bytes_per_hour",
            "The probes' own traffic on the link (both directions, from the IP header up).",
            labels,
            registry=reg,
        )
        self.budget_used = Gauge(
            "multinet_monitor_budget_used_bytes",
            "Bytes the link carried in its current billing period.",
            labels,
            registry=reg,
        )
        self.budget = Gauge(
            "multinet_monitor_budget_bytes",
            "The link's data budget per billing period.",
            labels,
            registry=reg,
        )
        self.published = counter_by(
            "multinet_monitor_messages_published",
            "Messages published, by kind (link-state, link-metrics, node-metrics).",
            "kind",
            ("link-state", "link-metrics", "node-metrics"),
            reg,
        )

    def record(self, message: LinkState | LinkMetrics, *, published: bool = True) -> None:
        """Account for one link's message: its gauges, and one message of its kind published
        unless `published` is false (its metrics go out in a `NodeMetrics`, counted by
        `batch_published`: the counter counts messages on the bus, not links)."""
        labels = (message.interface, str(message.bid))
        if published:
            self.published.labels(message.kind).inc()
        if isinstance(message, LinkState):
            self.link_up.labels(*labels).set(1 if message.up else 0)
            return
        self.rtt.labels(*labels).set(_seconds(message.rtt_ms))
        self.jitter.labels(*labels).set(_seconds(message.jitter_ms))
        self.loss.labels(*labels).set(math.nan if message.loss is None else message.loss)
        if message.probe_bytes_per_hour is not None:
            self.probe_bytes.labels(*labels).set(message.probe_bytes_per_hour)
        if message.budget_bytes is not None:
            self.budget.labels(*labels).set(message.budget_bytes)
        if message.budget_used_bytes is not None:
            self.budget_used.labels(*labels).set(message.budget_used_bytes)

    def batch_published(self) -> None:
        """One `NodeMetrics` published (the links' gauges were set by `record`)."""
        self.published.labels("node-metrics").inc()
