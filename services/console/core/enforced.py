"""What one PREM worker enforces for one mobile router, as far as the bus tells.

A status says which version a worker now enforces, not what is in it; the policy documents
on the node's policy topic say what each version changes. So the console keeps the last few
documents sent to each (node, mobile router) by version, and when a status reports version V
applied it applies V's operation to the set it knows (an Install replaces it, an Update
changes it by id, a Flush empties it). A status for a version it has no document for (the
console started after it was sent) makes the set unknown until the next Install. The
fallbacks of each status (policy id -> the BID its flows use instead) are the worker's
whole current list and override the policies' BIDs.

Policy ids are the NSA's `<class>.<index>` (services/nsa/core/plan.py), so the set maps back
to a BID per selector of each class.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.contracts.messages import PolicyStatus
from services.contracts.policy import Drop, Flush, Install, Operation, Policy, PolicyMessage

#: Documents kept per (node, MR) waiting for their status: one is in flight at a time, a few
#: cover a status that overtakes or a retry.
DOCUMENTS_KEPT = 8
#: Policies kept per (node, MR): more than any class set the NSA sends (the gateway's limit).
POLICIES_KEPT = 1024
#: What a selector whose policy drops its flows shows instead of a BID.
DROPPED = -1


@dataclass(slots=True)
class Enforcement:
    """One worker's enforced set for one mobile router (`policies` None: not known)."""

    node: str
    policies: dict[str, int] | None = None  # policy id -> BID (DROPPED for a drop)
    version: int | None = None
    fallbacks: dict[str, int | None] = field(default_factory=dict)
    documents: dict[int, Operation] = field(default_factory=dict)
    result: str = ""
    refusal: str = ""
    at: float = 0.0

    def document(self, message: PolicyMessage) -> None:
        """Remember a document until its status (the oldest beyond `DOCUMENTS_KEPT` go)."""
        self.documents[message.version] = message.operation
        while len(self.documents) > DOCUMENTS_KEPT:
            del self.documents[min(self.documents)]

    def status(self, status: PolicyStatus, now: float) -> None:
        """Account for one status of this worker."""
        self.result = status.result
        self.at = now
        self.fallbacks = {f.policy_id: f.active_bid for f in status.fallbacks}
        if status.result == "refused":
            self.refusal = status.refusals[0].reason if status.refusals else "refused"
            if status.requested_version is not None:
                self.documents.pop(status.requested_version, None)
            return
        self.refusal = ""
        if status.result != "applied":
            return
        operation = self.documents.pop(status.version, None)
        if operation is None:
            if status.version != self.version:
                self.policies = None  # a version we never saw the document of
        else:
            self.policies = _applied(self.policies, operation)
        self.version = status.version
        for version in [v for v in self.documents if v < status.version]:
            del self.documents[version]

    def class_flows(self) -> dict[str, tuple[int | None, ...]] | None:
        """Per class, the BID of each selector in index order (None: flows without a BID)."""
        if self.policies is None:
            return None
        found: dict[str, dict[int, int | None]] = {}
        for policy_id, bid in self.policies.items():
            name, _, index = policy_id.rpartition(".")
            if not name or not index.isdigit():
                name, index = policy_id, "0"
            effective = self.fallbacks.get(policy_id, bid)
            found.setdefault(name, {})[int(index)] = effective
        return {name: tuple(v for _, v in sorted(by.items())) for name, by in found.items()}


def _bid(policy: Policy) -> int:
    """The BID shown for a policy: a forward's BID; for a balance or a duplicate (version-2
    documents) its first share or path, the one the console compares with the NSA's choice."""
    return DROPPED if isinstance(policy.action, Drop) else policy.action.bids()[0]


def _applied(current: dict[str, int] | None, operation: Operation) -> dict[str, int] | None:
    if isinstance(operation, Flush):
        return {}
    if isinstance(operation, Install):
        return {p.id: _bid(p) for p in operation.policies[:POLICIES_KEPT]}
    if current is None:
        return None  # a diff against a set we do not know
    result = dict(current)
    for policy_id in operation.delete:
        result.pop(policy_id, None)
    for policy in (*operation.replace, *operation.insert):
        if policy.id in result or len(result) < POLICIES_KEPT:
            result[policy.id] = _bid(policy)
    return result
