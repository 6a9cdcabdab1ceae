"""The mobility-events service's Prometheus metrics (`services.metrics` holds what every
service exports and the exporter)."""

from __future__ import annotations

from prometheus_client import Counter

from services.contracts.messages import BindingEventKind
from services.metrics import ServiceMetrics, counter_by


class MobilityEventsMetrics(ServiceMetrics):
    """Binding events published and Mobility Headers that could not be decoded."""

    def __init__(self, node: str, decode_reasons: tuple[str, ...]) -> None:
        super().__init__("mobility-events", node)
        reg = self.registry
        self.events = counter_by(
            "multinet_mobility_events_published",
            "Binding events published, by kind.",
            "event",
            (kind.value for kind in BindingEventKind),
            reg,
        )
        self.decode_errors = counter_by(
            "multinet_mobility_events_decode_errors",
            "Mobility Headers dropped as malformed, by reason.",
            "reason",
            decode_reasons,
            reg,
        )
        self.dropped = Counter(
            "multinet_mobility_events_dropped",
            "Decoded messages dropped because the work queue was full.",
            registry=reg,
        )
