"""Validation of one SOAP call before anything is delivered: pure, no SOAP and no MQTT.

A call names a mobile router and carries two documents. Every check runs on both documents
before either is sent, so a call that is wrong for one node reaches no node. Each refusal
carries a fault code the caller can act on and the problems found (part, line, policy, field).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from services.contracts import policy_xml
from services.contracts.errors import MultinetError, PolicyDocumentError, Problem
from services.contracts.policy import Direction, PolicyMessage
from services.soap_gateway.config import GatewaySettings


class FaultCode(StrEnum):
    """Fault codes of refused calls (SOAP 1.1 `Client.*`: the caller must change the call)."""

    UNKNOWN_MOBILE_ROUTER = "Client.UnknownMobileRouter"
    MISSING_PART = "Client.MissingPart"
    INVALID_DOCUMENT = "Client.InvalidDocument"
    OPERATION_MISMATCH = "Client.OperationMismatch"
    NODE_MISMATCH = "Client.NodeMismatch"
    SCHEME_CONFLICT = "Client.SchemeConflict"


@dataclass(frozen=True)
class PartProblem:
    """A problem found in one part of a call (`downlink`, `uplink` or `mobile_router`)."""

    part: str
    problem: Problem

    def __str__(self) -> str:
        return f"{self.part}: {self.problem}"


class CallRefused(MultinetError):  # noqa: N818 - the name reads as what happened
    """A call refused whole before delivery; `code` says which kind of mistake it is."""

    def __init__(self, code: FaultCode, problems: list[PartProblem]) -> None:
        self.code = code
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class Delivery:
    """One validated document and the node it goes to.

    `document` is None for the MR in scheme 2: the HA's worker derives and forwards the
    mirrored uplink document with the same version; the gateway only awaits the answer.
    """

    node: str
    direction: Direction
    version: int
    document: bytes | None


_PARTS = (("downlink", Direction.DOWNLINK), ("uplink", Direction.UPLINK))


def check_call(
    settings: GatewaySettings,
    operation: str,
    mobile_router: str | None,
    downlink: str | None,
    uplink: str | None,
) -> tuple[Delivery, ...]:
    """Validate a call; return its deliveries (HA first) or raise `CallRefused`.

    Scheme 1 carries both documents. Scheme 2 carries only a downlink document marked
    `symmetric="true"`: the HA's worker mirrors it for the MR. `operation` is the SOAP
    operation's kind (`install`, `update`, `flush`); each document must carry the same
    operation, so that a caller's intent and document cannot disagree.
    """
    router = settings.router(mobile_router or "")
    if router is None:
        problem = Problem(f"mobile router {mobile_router!r} is not served by this gateway")
        raise CallRefused(FaultCode.UNKNOWN_MOBILE_ROUTER, [PartProblem("mobile_router", problem)])
    documents = {
        part: text
        for part, text in (("downlink", downlink), ("uplink", uplink))
        if text and text.strip()
    }
    if "downlink" not in documents:
        missing = [p for p in ("downlink", "uplink") if p not in documents]
        raise CallRefused(
            FaultCode.MISSING_PART,
            [PartProblem(p, Problem("the document is missing or empty")) for p in missing],
        )
    messages: dict[str, tuple[bytes, PolicyMessage]] = {}
    invalid: list[PartProblem] = []
    for part, text in documents.items():
        data = text.encode("utf-8")
        try:
            message = policy_xml.parse(
                data, max_bytes=settings.max_body_bytes, max_policies=settings.max_policies
            )
        except PolicyDocumentError as exc:
            invalid.extend(PartProblem(part, p) for p in exc.problems)
            continue
        messages[part] = (data, message)
    if invalid:
        raise CallRefused(FaultCode.INVALID_DOCUMENT, invalid)
    _check_scheme(messages)
    mismatched = [
        PartProblem(
            part,
            Problem(
                f"a {operation} call carries a <{message.operation.kind}> document",
                field="operation",
            ),
        )
        for part, (_, message) in messages.items()
        if message.operation.kind != operation
    ]
    if mismatched:
        raise CallRefused(FaultCode.OPERATION_MISMATCH, mismatched)
    nodes = {"downlink": router.ha_node, "uplink": router.mr_node}
    misaddressed: list[PartProblem] = []
    for part, direction in _PARTS:
        if part not in messages:
            continue
        message = messages[part][1]
        expected = (
            ("node", message.node, nodes[part]),
            ("mobile-router", message.mobile_router, router.id),
            ("direction", message.direction.value, direction.value),
        )
        misaddressed.extend(
            PartProblem(part, Problem(f"is {got!r}, expected {want!r}", field=name))
            for name, got, want in expected
            if got != want
        )
    if misaddressed:
        raise CallRefused(FaultCode.NODE_MISMATCH, misaddressed)
    down = messages["downlink"]
    up = messages.get("uplink")
    return (
        Delivery(nodes["downlink"], Direction.DOWNLINK, down[1].version, down[0]),
        Delivery(
            nodes["uplink"],
            Direction.UPLINK,
            down[1].version if up is None else up[1].version,
            None if up is None else up[0],
        ),
    )


def _check_scheme(messages: dict[str, tuple[bytes, PolicyMessage]]) -> None:
    """Scheme 1 needs the uplink document; scheme 2 (symmetric downlink) must not have one."""
    symmetric = messages["downlink"][1].symmetric
    if symmetric and "uplink" in messages:
        problem = Problem(
            "the downlink document is symmetric (scheme 2): the HA derives the uplink set, so "
            "the call must not carry an uplink document",
            field="symmetric",
        )
        raise CallRefused(FaultCode.SCHEME_CONFLICT, [PartProblem("uplink", problem)])
    if not symmetric and "uplink" not in messages:
        problem = Problem(
            "the document is missing or empty (or mark the downlink document "
            'symmetric="true" for scheme 2)'
        )
        raise CallRefused(FaultCode.MISSING_PART, [PartProblem("uplink", problem)])
