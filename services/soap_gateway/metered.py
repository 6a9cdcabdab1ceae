"""The gateway core with its Prometheus counters: every call's outcome, counted at the edge.

A subclass rather than code inside `GatewayCore.deliver`, so the core stays about delivering
and its unit tests never see a metric. Both transports (HTTP and UDP) run through it.
"""

from __future__ import annotations

import time

from services.soap_gateway.auth import Caller, NotAuthorisedError
from services.soap_gateway.checks import CallRefused
from services.soap_gateway.config import GatewaySettings
from services.soap_gateway.core import BusUnavailableError, GatewayCore, NodeOutcome, Publisher
from services.soap_gateway.metrics import GatewayMetrics
from services.soap_gateway.tracker import Tracker

BUS_UNAVAILABLE = "Server.BusUnavailable"


class MeteredCore(GatewayCore):
    """`GatewayCore` that counts deliveries by node answer, refusals by fault code, and times
    each call from its arrival to the last node's answer (or the deadline)."""

    def __init__(
        self,
        settings: GatewaySettings,
        tracker: Tracker,
        publisher: Publisher,
        metrics: GatewayMetrics,
    ) -> None:
        super().__init__(settings, tracker, publisher)
        self.metrics = metrics

    def deliver(
        self,
        operation: str,
        mobile_router: str | None,
        downlink: str | None,
        uplink: str | None,
        *,
        caller: Caller | None = None,
    ) -> tuple[NodeOutcome, ...]:
        """`GatewayCore.deliver`, counted."""
        started = time.monotonic()
        try:
            outcomes = super().deliver(operation, mobile_router, downlink, uplink, caller=caller)
        except CallRefused as exc:
            self.metrics.calls_refused.labels(exc.code.value).inc()
            raise
        except NotAuthorisedError as exc:
            self.metrics.calls_refused.labels(exc.code).inc()
            raise
        except BusUnavailableError:
            self.metrics.calls_refused.labels(BUS_UNAVAILABLE).inc()
            raise
        self.metrics.delivery_seconds.observe(time.monotonic() - started)
        for outcome in outcomes:
            self.metrics.deliveries.labels(outcome.outcome.value).inc()
        return outcomes
