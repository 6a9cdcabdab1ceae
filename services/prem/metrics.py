"""The PREM's Prometheus metrics: documents applied and refused (by a bounded reason), apply
latency, rules and policies enforced, fallbacks. The worker and the standalone daemon record
the same ones, from the node's one life cycle (`node.PremNode`).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from services.contracts.messages import PolicyStatus, Refusal
from services.metrics import LATENCY_BUCKETS, ServiceMetrics, counter_by

#: Values of `multinet_prem_messages_refused_total{reason}`.
REFUSAL_REASONS = (
    "stale-version",
    "fenced-epoch",
    "wrong-node",
    "wrong-mobile-router",
    "wrong-direction",
    "no-peer",
    "retained",
    "unknown-bid",
    "conflict",
    "over-limit",
    "invalid-document",
    "kernel",
    "not-handled",
)
_FIELD_REASONS = {
    "version": "stale-version",
    # A document of an NSA replica that lost its partition (`services.contracts.fencing`).
    "version.epoch": "fenced-epoch",
    "node": "wrong-node",
    "mobile-router": "wrong-mobile-router",
    "direction": "wrong-direction",
    "symmetric": "no-peer",
    "retain": "retained",
    "action.bid": "unknown-bid",
}
_CONFLICTS = ("is not installed", "is already installed")


def refusal_reason(refusal: Refusal) -> str:
    """A bounded label for one refusal (free text would make a time series per message)."""
    if refusal.field in _FIELD_REASONS:
        return _FIELD_REASONS[refusal.field]
    text = refusal.reason
    if text.startswith(("kernel:", "fallback failed")):
        return "kernel"
    if text.startswith("not handled:"):
        return "not-handled"
    if any(marker in text for marker in _CONFLICTS):
        return "conflict"
    if "over the limit" in text:
        return "over-limit"
    return "invalid-document"


class PremMetrics(ServiceMetrics):
    """A PREM worker's documents, latency, rules and fallbacks."""

    def __init__(self, node: str) -> None:
        super().__init__("prem", node)
        reg = self.registry
        self.applied = Counter(
            "multinet_prem_messages_applied",
            "Policy messages applied (or redelivered).",
            registry=reg,
        )
        self.refused = counter_by(
            "multinet_prem_messages_refused",
            "Policy messages refused, by the reason of their first refusal.",
            "reason",
            REFUSAL_REASONS,
            reg,
        )
        self.apply_seconds = Histogram(
            "multinet_prem_apply_seconds",
            "Time to apply one policy message: parse, checks, kernel batch, durable state.",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.rules_owned = Gauge(
            "multinet_prem_rules_owned", "Flow rules the back end enforces for us.", registry=reg
        )
        self.policies = Gauge(
            "multinet_prem_policies", "Policies in the desired set.", registry=reg
        )
        self.version = Gauge(
            "multinet_prem_enforced_version", "The policy version enforced.", registry=reg
        )
        self.fallbacks = Counter(
            "multinet_prem_fallbacks",
            "Fallback changes (a BID became unusable or usable).",
            registry=reg,
        )
        self.fallbacks_active = Gauge(
            "multinet_prem_fallbacks_active",
            "Policies whose primary BID is unusable now.",
            registry=reg,
        )

    def record(self, status: PolicyStatus, *, rules: int, policies: int) -> None:
        """Account for one status the worker published, and the state it left."""
        if status.result == "applied":
            self.applied.inc()
            self.apply_seconds.observe(status.elapsed_ms / 1000)
        elif status.result == "refused":
            first = status.refusals[0] if status.refusals else None
            self.refused.labels(
                refusal_reason(first) if first is not None else "invalid-document"
            ).inc()
        else:
            self.fallbacks.inc()
        self.fallbacks_active.set(len(status.fallbacks))
        self.set_state(status.version, rules=rules, policies=policies)

    def set_state(self, version: int, *, rules: int, policies: int) -> None:
        """The enforced version and sizes (at start, and after every change).

        The version goes last: a scrape that shows a version shows everything recorded with
        it (the status is published first, so a caller may scrape before this runs)."""
        self.rules_owned.set(rules)
        self.policies.set(policies)
        self.version.set(version)
