"""The mobility-events service's Prometheus metrics (`services.metrics` holds what every
service exports and the exporter)."""

from __future__ import annotations

from prometheus_client import Counter

from services.contracts.messages import BindingEventKind
from services.metrics import ServiceMetrics


class MobilityEventsMetrics(ServiceMetrics):
    """Binding events published and Mobility Headers that could not be decoded."""

    def __init__(self, node: str, decode_reasons: tuple[str, ...]) -> None:
        super().__init__("mobility-events", node)
        reg = self.registry
        self.events = Counter(
            "multinet_mobility_events_published",
            "Binding events published, by kind.",
            ["event"],
            registry=reg,
        )
        for kind in BindingEventKind:
            self.events.labels(kind.value)
        self.decode_errors = Counter(
            "multinet_mobility_events_decode_errors",
            "Mobility Headers dropped as malformed, by reason.",
            ["reason"],
            registry=reg,
        )
        for reason in decode_reasons:
            self.decode_errors.labels(reason)
        self.dropped = Counter(
            "multinet_mobility_events_dropped",
            "Decoded messages dropped because the work queue was full.",
            registry=reg,
        )
