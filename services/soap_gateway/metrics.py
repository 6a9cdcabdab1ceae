"""The SOAP gateway's Prometheus metrics: every node document's answer, the calls refused by
fault code, and each call's time to its last answer (counted by `metered.MeteredCore`).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from services.metrics import LATENCY_BUCKETS, ServiceMetrics, counter_by
from services.soap_gateway.core import Outcome


class GatewayMetrics(ServiceMetrics):
    """The SOAP gateway's deliveries, their latency and the calls it refused."""

    def __init__(self, name: str) -> None:
        super().__init__("soap-gateway", name)
        reg = self.registry
        self.deliveries = counter_by(
            "multinet_gateway_deliveries",
            "Node documents delivered, by the node's answer.",
            "result",
            (outcome.value for outcome in Outcome),
            reg,
        )
        self.calls_refused = Counter(
            "multinet_gateway_calls_refused",
            "Calls answered with a SOAP Fault before anything was published, by fault code.",
            ["code"],
            registry=reg,
        )
        self.delivery_seconds = Histogram(
            "multinet_gateway_delivery_seconds",
            "Time from a valid call to every node's answer (or the deadline).",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
