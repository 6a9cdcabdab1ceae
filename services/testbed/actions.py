"""What a scenario step does: deliver policies through SOAP, publish what the NSA listens to,
or change an access link. Each action returns a record of when it started, when it returned
and what it produced; nothing here waits for the effect (that is what conditions are for).

Policies through SOAP play the paper's NSA stub: scheme 1, one Install/Update/Flush call with
the HA's downlink document (the scenario's selectors mirrored) and the MR's uplink document,
versions one above what each node reported (GetStatus) or was last given. The gateway answers
once both workers acknowledged, so the answer carries each node's outcome.

Rules and preferences are published retained, as their contract topics are, as the NSA's
documents (`services.nsa.core.documents`: the envelope plus the rules, or all of a router's
preference entries), which the NSA validates whole and applies on arrival.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from services.contracts import policy_xml
from services.contracts.policy import (
    Direction,
    Flush,
    Install,
    Operation,
    Policy,
    PolicyMessage,
    Update,
    mirror_selector,
)
from services.monitor.responder import DelayResponder
from services.nsa.core import OperatorRules, Preferences
from services.testbed import access
from services.testbed import addressing as a
from services.testbed.recorder import Recorder
from services.testbed.scenario import (
    Action,
    Attach,
    CareOf,
    Carrier,
    Degrade,
    Detach,
    FlushPolicies,
    InstallPolicies,
    PublishPreferences,
    PublishRules,
    UpdatePolicies,
)
from services.testbed.topology import Topology

SENDER = "testbed"


class ActionFailed(RuntimeError):  # noqa: N818 - the name reads as what happened
    """An action could not be done (a node refused or was not reached, a kernel change
    failed); the run stops, since every later step would measure something else."""


@dataclass(frozen=True)
class ActionRecord:
    """When an action ran and what it produced."""

    action: str
    started: float
    returned: float
    detail: dict[str, Any] = field(default_factory=dict)


def _mirror(policy: Policy) -> Policy:
    return policy.model_copy(update={"selector": mirror_selector(policy.selector)})


def documents(operation: Operation, versions: dict[str, int]) -> tuple[str, str]:
    """The (downlink for the HA, uplink for the MR) documents of one scheme 1 call."""
    if isinstance(operation, Install):
        down: Operation = Install(policies=tuple(_mirror(p) for p in operation.policies))
    elif isinstance(operation, Update):
        down = Update(
            insert=tuple(_mirror(p) for p in operation.insert),
            replace=tuple(_mirror(p) for p in operation.replace),
            delete=operation.delete,
        )
    else:
        down = operation
    parts = []
    for node, direction, op in (
        (a.HA_NODE, Direction.DOWNLINK, down),
        (a.MR_NODE, Direction.UPLINK, operation),
    ):
        message = PolicyMessage(
            node=node,
            mobile_router=a.MOBILE_ROUTER,
            direction=direction,
            version=versions[node],
            operation=op,
        )
        parts.append(policy_xml.render(message).decode())
    return parts[0], parts[1]


def rules_payload(rules: OperatorRules) -> bytes:
    """The retained operator rules document."""
    from services.nsa.core.documents import RulesDocument

    return RulesDocument(sender=SENDER, rules=rules).model_dump_json().encode()


def preferences_payload(entries: tuple[Preferences, ...]) -> bytes:
    """The retained preferences document of mr1 (every entry of the router)."""
    from services.nsa.core.documents import PreferencesDocument

    document = PreferencesDocument(sender=SENDER, mobile_router=a.MOBILE_ROUTER, entries=entries)
    return document.model_dump_json().encode()


class SoapStub:
    """The NSA stub: a zeep client of the gateway that keeps each node's version."""

    def __init__(self, url: str) -> None:
        import zeep

        self.client: Any = zeep.Client(f"{url}?wsdl")  # type: ignore[no-untyped-call]
        self.versions: dict[str, int] | None = None

    def _next_versions(self) -> dict[str, int]:
        if self.versions is None:
            import zeep.helpers

            rows = zeep.helpers.serialize_object(  # type: ignore[no-untyped-call]
                self.client.service.GetStatus(mobile_router=a.MOBILE_ROUTER)
            )
            self.versions = {row["node"]: int(row["version"] or 0) for row in rows}
        self.versions = {node: version + 1 for node, version in self.versions.items()}
        return self.versions

    def call(self, name: str, operation: Operation) -> dict[str, dict[str, Any]]:
        """One Install/Update/Flush call; the outcome per node (raises unless all applied)."""
        import zeep.helpers

        down, up = documents(operation, self._next_versions())
        method = getattr(self.client.service, name)
        rows = zeep.helpers.serialize_object(  # type: ignore[no-untyped-call]
            method(mobile_router=a.MOBILE_ROUTER, downlink=down, uplink=up)
        )
        outcome = {row["node"]: dict(row) for row in rows}
        bad = {node: row for node, row in outcome.items() if row["outcome"] != "applied"}
        if bad:
            raise ActionFailed(f"SOAP {name}: not applied everywhere: {bad}")
        return outcome


@dataclass
class ActionContext:
    """What actions act on."""

    bed: Topology
    recorder: Recorder
    soap: SoapStub | None = None
    #: The probe responder of each access router (by name), for `degrade`'s delay.
    responders: dict[str, DelayResponder] = field(default_factory=dict)


def perform(action: Action, ctx: ActionContext) -> ActionRecord:
    """Do one action now; return its record."""
    started = time.monotonic()
    detail = _dispatch(action, ctx)
    return ActionRecord(action.action, started, time.monotonic(), detail)


def _dispatch(action: Action, ctx: ActionContext) -> dict[str, Any]:  # noqa: PLR0911 - one per kind
    if isinstance(action, InstallPolicies | UpdatePolicies | FlushPolicies):
        return _soap(action, ctx)
    if isinstance(action, PublishRules):
        topic = ctx.recorder.topics.operator_rules()
        ctx.recorder.publish(topic, rules_payload(action.rules), retain=True)
        return {"topic": topic}
    if isinstance(action, PublishPreferences):
        topic = ctx.recorder.topics.preferences(a.MOBILE_ROUTER)
        ctx.recorder.publish(topic, preferences_payload(action.entries), retain=True)
        return {"topic": topic}
    if isinstance(action, Detach):
        return {"link": action.link, "lost": access.detach(ctx.bed, action.link)}
    if isinstance(action, Attach):
        address = access.attach(ctx.bed, action.link, action.router)
        return {"link": action.link, "router": action.router, "care_of": address}
    if isinstance(action, Carrier):
        access.set_carrier(ctx.bed, action.link, up=action.up)
        return {"link": action.link, "up": action.up}
    if isinstance(action, CareOf):
        old = access.change_care_of(ctx.bed, action.link, str(action.address))
        return {"link": action.link, "care_of": str(action.address), "old": old}
    if isinstance(action, Degrade):
        return _degrade(action, ctx)
    raise AssertionError(f"unhandled action {action!r}")


def _degrade(action: Degrade, ctx: ActionContext) -> dict[str, Any]:
    router = access.set_loss(ctx.bed, action.link, action.loss)
    responder = ctx.responders.get(router)
    if action.delay_ms > 0 and responder is None:
        raise ActionFailed(f"no probe responder in {router}: give {action.link} a udp probe")
    if responder is not None:
        responder.delay_s = action.delay_ms / 1000
    return {
        "link": action.link,
        "router": router,
        "loss": action.loss,
        "delay_ms": action.delay_ms,
    }


def _soap(
    action: InstallPolicies | UpdatePolicies | FlushPolicies, ctx: ActionContext
) -> dict[str, Any]:
    if ctx.soap is None:
        raise ActionFailed("policies through SOAP need the soap decider")
    operation: Install | Update | Flush
    if isinstance(action, InstallPolicies):
        name, operation = "Install", Install(policies=action.policies)
    elif isinstance(action, UpdatePolicies):
        op = Update(insert=action.insert, replace=action.replace, delete=action.delete)
        name, operation = "Update", op
    else:
        name, operation = "Flush", Flush()
    outcome = ctx.soap.call(name, operation)
    return {
        "operation": name,
        "versions": {node: row["version"] for node, row in outcome.items()},
    }
