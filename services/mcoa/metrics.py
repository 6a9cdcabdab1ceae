"""The MCoA agent's Prometheus metrics, home agent and mobile router side (`services.metrics`
holds what every service exports and the exporter)."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.metrics import LATENCY_BUCKETS, ServiceMetrics, counter_by
from services.mobility_header.status import BaStatus

#: `multinet_mcoa_bindings{state}` at the mobile router: one per link (`Registration.state`).
MR_BINDING_STATES = ("registered", "registering", "unregistered", "no-care-of")
#: Values of `multinet_mcoa_binding_updates_sent_total{kind}`.
BU_KINDS = ("register", "refresh", "retransmit", "deregister")


def _status_counter(name: str, doc: str, registry: CollectorRegistry) -> Counter:
    """A counter by BA status (the number: bounded, and what the RFCs and logs name)."""
    return counter_by(name, doc, "status", (str(int(s)) for s in BaStatus), registry)


class McoaMetrics(ServiceMetrics):
    """What both sides of the MCoA agent export: bindings by state and the pipes installed."""

    def __init__(self, service: str, node: str, states: tuple[str, ...]) -> None:
        super().__init__(service, node)
        self.states = states
        self.bindings = Gauge(
            "multinet_mcoa_bindings",
            "Bindings by state (HA: its binding cache; MR: each link's registration).",
            ["state"],
            registry=self.registry,
        )
        for state in states:
            self.bindings.labels(state)
        self.pipes = Gauge(
            "multinet_mcoa_pipes",
            "BID pipes installed: routes into a pipe (of the agent's pipe kind) in the BID tables.",
            registry=self.registry,
        )

    def set_bindings(self, counts: Mapping[str, int]) -> None:
        """Each state's count (a state not in `counts` is 0)."""
        for state in self.states:
            self.bindings.labels(state).set(counts.get(state, 0))


class McoaHaMetrics(McoaMetrics):
    """The home agent: BUs in, BAs out by status, bindings that ran out, handling time."""

    def __init__(self, node: str) -> None:
        super().__init__("mcoa-ha", node, ("registered",))
        reg = self.registry
        self.updates_received = Counter(
            "multinet_mcoa_binding_updates_received",
            "Binding Updates received and decoded.",
            registry=reg,
        )
        self.acks_sent = _status_counter(
            "multinet_mcoa_binding_acks_sent", "Binding Acknowledgements sent, by status.", reg
        )
        self.expiries = Counter(
            "multinet_mcoa_binding_expiries",
            "Bindings that ran out without a refresh.",
            registry=reg,
        )
        self.handling_seconds = Histogram(
            "multinet_mcoa_bu_handling_seconds",
            "From a Binding Update's arrival to its BA sent: cache decision and kernel pipes.",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )


class McoaMrMetrics(McoaMetrics):
    """The mobile router: BUs out by kind, BAs in by status, registration round trips."""

    def __init__(self, node: str) -> None:
        super().__init__("mcoa-mr", node, MR_BINDING_STATES)
        reg = self.registry
        self.updates_sent = counter_by(
            "multinet_mcoa_binding_updates_sent",
            "Binding Updates sent, by kind (register, refresh, retransmit, deregister).",
            "kind",
            BU_KINDS,
            reg,
        )
        self.acks_received = _status_counter(
            "multinet_mcoa_binding_acks_received",
            "Binding Acknowledgements received for our BUs, by status.",
            reg,
        )
        self.registration_seconds = Histogram(
            "multinet_mcoa_registration_seconds",
            "From a Binding Update sent to the accepted BA answering it.",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
