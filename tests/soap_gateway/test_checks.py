"""A call is validated whole before delivery; each kind of mistake has its own fault code."""

from __future__ import annotations

import pytest

from services.contracts import policy_xml
from services.contracts.policy import Flush, Install, Update
from services.soap_gateway.checks import CallRefused, FaultCode, check_call
from tests.prem.factories import message, udp_to
from tests.soap_gateway.helpers import downlink, gateway_settings, uplink

SETTINGS = gateway_settings()
VIDEO = Install(policies=(udp_to("video", 5001, 2),))


def test_a_valid_call_gives_one_delivery_per_node_ha_first() -> None:
    deliveries = check_call(SETTINGS, "install", "mr1", downlink(3, VIDEO), uplink(4, VIDEO))
    assert [(d.node, d.direction.value, d.version) for d in deliveries] == [
        ("ha1", "downlink", 3),
        ("mr1", "uplink", 4),
    ]
    assert deliveries[0].document is not None
    assert policy_xml.parse(deliveries[0].document).node == "ha1"


def _refusal(*args: str | None) -> CallRefused:
    with pytest.raises(CallRefused) as info:
        check_call(SETTINGS, *args)  # type: ignore[arg-type]
    return info.value


@pytest.mark.parametrize(
    ("call", "code", "text"),
    [
        (("install", "mr9", downlink(1, VIDEO), uplink(1, VIDEO)), "UnknownMobileRouter", "mr9"),
        (("install", None, downlink(1, VIDEO), uplink(1, VIDEO)), "UnknownMobileRouter", "None"),
        (("install", "mr1", downlink(1, VIDEO), None), "MissingPart", "uplink: "),
        (("install", "mr1", "  ", uplink(1, VIDEO)), "MissingPart", "downlink: "),
        (("install", "mr1", "<policy-message", uplink(1, VIDEO)), "InvalidDocument", "well-formed"),
        (
            ("install", "mr1", downlink(1, VIDEO), uplink(1, VIDEO).replace("flow-policy", "x")),
            "InvalidDocument",
            "uplink: line 2: expected namespace urn:multinet:flow-policy:1",
        ),
        (
            (
                "install",
                "mr1",
                downlink(1, VIDEO).replace("<next-header>17", "<next-header>1"),
                uplink(1, VIDEO),
            ),
            "InvalidDocument",
            "downlink: line",
        ),
        (
            ("install", "mr1", downlink(1, Flush()), uplink(1, Flush())),
            "OperationMismatch",
            "<flush>",
        ),
        (
            ("update", "mr1", downlink(1, Update(delete=("a",))), uplink(1, VIDEO)),
            "OperationMismatch",
            "uplink: field operation: a update call carries a <install> document",
        ),
        (("install", "mr1", uplink(1, VIDEO), downlink(1, VIDEO)), "NodeMismatch", "field node"),
    ],
)
def test_each_mistake_has_its_code_and_names_the_part(
    call: tuple[str, ...], code: str, text: str
) -> None:
    refusal = _refusal(*call)
    assert refusal.code == FaultCode(f"Client.{code}")
    assert text in str(refusal)


def test_problems_of_both_documents_are_reported_together() -> None:
    refusal = _refusal("install", "mr1", "<a", "<b")
    assert {p.part for p in refusal.problems} == {"downlink", "uplink"}


def test_a_document_for_another_mobile_router_is_refused() -> None:
    settings = gateway_settings(
        mobile_routers=[
            {"id": "mr1", "ha_node": "ha1", "mr_node": "mr1"},
            {"id": "mr2", "ha_node": "ha1", "mr_node": "mr2"},
        ]
    )
    with pytest.raises(CallRefused) as info:
        check_call(settings, "install", "mr2", downlink(1, VIDEO), uplink(1, VIDEO))
    assert info.value.code is FaultCode.NODE_MISMATCH
    assert "field mobile-router: is 'mr1', expected 'mr2'" in str(info.value)


def test_scheme_2_needs_only_a_symmetric_downlink_and_awaits_the_mr() -> None:
    symmetric = policy_xml.render(message(5, VIDEO).model_copy(update={"symmetric": True})).decode()
    deliveries = check_call(SETTINGS, "install", "mr1", symmetric, None)
    assert [(d.node, d.version, d.document is None) for d in deliveries] == [
        ("ha1", 5, False),
        ("mr1", 5, True),
    ]
    conflict = _refusal("install", "mr1", symmetric, uplink(5, VIDEO))
    assert conflict.code is FaultCode.SCHEME_CONFLICT
    assert "must not carry an uplink document" in str(conflict)
    missing = _refusal("install", "mr1", downlink(5, VIDEO), None)
    assert missing.code is FaultCode.MISSING_PART
    assert 'symmetric="true"' in str(missing)
