"""Version-2 policy documents: the balance and duplicate actions, and version 1 unchanged.

Every refusal names the policy, the field and the line, as for version 1.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.contracts.errors import PolicyDocumentError, Problem
from services.contracts.policy import (
    Balance,
    Direction,
    Drop,
    Duplicate,
    Forward,
    Install,
    Policy,
    PolicyMessage,
    Priority,
    Share,
    Tier,
    Update,
)
from services.contracts.policy_xml import NAMESPACE, NAMESPACE_V2, parse, render, validate_xsd


def document(policies: str, namespace: str = NAMESPACE_V2) -> bytes:
    """An install of `policies` in `namespace`; the first policy line is line 4."""
    body = textwrap.dedent(policies).strip()
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<policy-message xmlns="{namespace}" node="ha1" mobile-router="mr1" '
        'direction="downlink" version="7">\n'
        f"<install>\n{body}\n</install>\n</policy-message>\n"
    ).encode()


def only(error: PolicyDocumentError) -> Problem:
    assert len(error.problems) == 1, error.problems
    return error.problems[0]


def refused(data: bytes) -> PolicyDocumentError:
    with pytest.raises(PolicyDocumentError) as info:
        parse(data)
    return info.value


def message(*policies: Policy) -> PolicyMessage:
    return PolicyMessage(
        node="ha1",
        mobile_router="mr1",
        direction=Direction.DOWNLINK,
        version=7,
        operation=Install(policies=policies),
    )


BALANCE = Balance(shares=(Share(bid=1, weight=3), Share(bid=2, weight=1)), fallbacks=(3,))
DUPLICATE = Duplicate(paths=(1, 2), fallbacks=(3,))


def test_balance_and_duplicate_parse_as_written() -> None:
    parsed = parse(
        document("""
        <policy id="video" priority="10">
          <balance>
            <share bid="1" weight="3"/><share bid="2" weight="1"/><fallback bid="3"/>
          </balance>
        </policy>
        <policy id="control" priority="5">
          <duplicate><path bid="1"/><path bid="2"/><fallback bid="3"/></duplicate>
        </policy>
    """)
    )
    assert isinstance(parsed.operation, Install)
    video, control = parsed.operation.policies
    assert video.action == BALANCE
    assert video.action.bids() == (1, 2, 3)
    assert control.action == DUPLICATE
    assert control.action.bids() == (1, 2, 3)


def test_render_writes_version_2_only_when_an_action_needs_it() -> None:
    old = message(
        Policy(id="a", priority=1, action=Forward(bid=1, fallbacks=(2,))),
        Policy(id="b", priority=2, action=Drop()),
    )
    rendered = render(old)
    assert f'xmlns="{NAMESPACE}"'.encode() in rendered
    assert parse(rendered) == old
    for action in (BALANCE, DUPLICATE):
        new = message(Policy(id="a", priority=1, action=action))
        rendered = render(new)
        assert f'xmlns="{NAMESPACE_V2}"'.encode() in rendered
        validate_xsd(rendered)
        assert parse(rendered) == new
        assert render(parse(rendered)) == rendered


def test_an_update_with_a_new_action_is_version_2() -> None:
    update = PolicyMessage(
        node="ha1",
        mobile_router="mr1",
        direction=Direction.DOWNLINK,
        version=7,
        operation=Update(replace=(Policy(id="a", priority=1, action=DUPLICATE),), delete=("b",)),
    )
    assert update.schema_version() == 2
    assert parse(render(update)) == update


def test_version_1_vocabulary_is_accepted_in_version_2() -> None:
    body = '<policy id="a" priority="1"><forward bid="2"><fallback bid="1"/></forward></policy>'
    assert parse(document(body, NAMESPACE_V2)) == parse(document(body, NAMESPACE))


def test_version_1_document_with_a_version_2_action_says_which_version() -> None:
    problem = only(
        refused(
            document(
                '<policy id="v" priority="1"><duplicate><path bid="1"/><path bid="2"/>'
                "</duplicate></policy>",
                NAMESPACE,
            )
        )
    )
    assert "duplicate action needs a version-2 document" in problem.reason
    assert NAMESPACE_V2 in problem.reason
    assert problem.policy_id == "v"
    assert problem.line == 4


@pytest.mark.parametrize(
    ("action", "field", "words"),
    [
        ('<balance><share bid="1" weight="0"/></balance>', "balance.share", "weight"),
        ('<balance><share bid="1" weight="1001"/></balance>', "balance.share", "1001"),
        ('<balance><share bid="1"/></balance>', "balance.share", "weight"),
        ('<balance><share bid="0" weight="1"/></balance>', "balance.share", "bid"),
        ("<balance/>", "balance", "Missing child element"),
        (
            '<balance><share bid="1" weight="1"/><share bid="1" weight="2"/></balance>',
            "balance",
            "BID repeated in balance/fallback list [1, 1]",
        ),
        (
            '<balance><share bid="1" weight="1"/><fallback bid="1"/></balance>',
            "balance",
            "BID repeated",
        ),
        (
            "<balance>"
            + "".join(f'<share bid="{b}" weight="1"/>' for b in range(1, 6))
            + "".join(f'<fallback bid="{b}"/>' for b in range(6, 10))
            + "</balance>",
            "balance",
            "9 BIDs in balance/fallback list",
        ),
        (
            "<balance>" + "".join(f'<share bid="{b}" weight="1"/>' for b in range(1, 10)),
            "balance.share",
            "not expected",
        ),
        ('<duplicate><path bid="1"/></duplicate>', "duplicate", "Missing child element"),
        (
            '<duplicate><path bid="2"/><path bid="2"/></duplicate>',
            "duplicate",
            "BID repeated in duplicate/fallback list [2, 2]",
        ),
        (
            '<duplicate><path bid="1"/><path bid="2"/><fallback bid="2"/></duplicate>',
            "duplicate",
            "BID repeated",
        ),
        (
            "<duplicate>"
            + "".join(f'<path bid="{b}"/>' for b in range(1, 6))
            + "".join(f'<fallback bid="{b}"/>' for b in range(6, 10))
            + "</duplicate>",
            "duplicate",
            "9 BIDs in duplicate/fallback list",
        ),
        (
            '<duplicate><path bid="1"/><path bid="2"/><share bid="3" weight="1"/></duplicate>',
            "duplicate.share",
            "not expected",
        ),
    ],
)
def test_refusals_name_policy_field_and_line(action: str, field: str, words: str) -> None:
    if action.startswith("<balance>") and not action.endswith("</balance>"):
        action += "</balance>"
    problem = only(refused(document(f'<policy id="p" priority="1">\n{action}\n</policy>')))
    assert words in problem.reason
    assert problem.policy_id == "p"
    assert problem.field == field
    assert problem.line == 5


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (lambda: Share(bid=1, weight=0), "greater than or equal to 1"),
        (lambda: Share(bid=1, weight=1001), "less than or equal to 1000"),
        (lambda: Balance(shares=()), "at least 1 item"),
        (lambda: Duplicate(paths=(1,)), "at least 2 items"),
        (lambda: Duplicate(paths=(1, 2), fallbacks=(1,)), "BID repeated"),
        (lambda: Duplicate(paths=tuple(range(1, 10))), "at most 8 items"),
        (
            lambda: Balance(shares=(Share(bid=1, weight=1),), fallbacks=tuple(range(2, 10))),
            "9 BIDs",
        ),
    ],
)
def test_models_refuse_the_same_without_a_document(build: object, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        build()  # type: ignore[operator]
    assert words in str(info.value)


def test_models_are_frozen_and_refuse_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        Balance.model_validate({"shares": [{"bid": 1, "weight": 1}], "colour": "red"})
    with pytest.raises(ValidationError):
        Share.model_validate({"bid": 1, "weight": 1, "extra": 1})
    with pytest.raises(ValidationError):
        DUPLICATE.paths = (2, 3)  # type: ignore[misc]


def test_the_readme_example_parses() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    found = re.findall(r"```xml\n(<policy-message[^`]*flow-policy:2[^`]*)```", readme)
    assert found, "README.md shows a version-2 document"
    kinds: set[str] = set()
    for text in found:
        parsed = parse(text.encode())
        assert isinstance(parsed.operation, Install)
        kinds |= {p.action.kind for p in parsed.operation.policies}
    assert kinds == {"balance", "duplicate", "priority"}


# ---- priority ------------------------------------------------------------------------------------

PRIORITY = Priority(
    tiers=(Tier(bid=1, rate_bps=20_000_000), Tier(bid=2, rate_bps=5_000_000), Tier(bid=3)),
    fallbacks=(4,),
)


def test_priority_parses_renders_and_round_trips() -> None:
    parsed = parse(
        document("""
        <policy id="bulk" priority="30">
          <priority>
            <tier bid="1" rate-bps="20000000"/><tier bid="2" rate-bps="5000000"/>
            <tier bid="3"/><fallback bid="4"/>
          </priority>
        </policy>
    """)
    )
    assert isinstance(parsed.operation, Install)
    (bulk,) = parsed.operation.policies
    assert bulk.action == PRIORITY
    assert bulk.action.bids() == (1, 2, 3, 4)
    new = message(Policy(id="bulk", priority=30, action=PRIORITY))
    assert new.schema_version() == 2
    rendered = render(new)
    assert f'xmlns="{NAMESPACE_V2}"'.encode() in rendered
    validate_xsd(rendered)
    assert parse(rendered) == new
    assert render(parse(rendered)) == rendered


def test_version_1_document_with_priority_says_which_version() -> None:
    problem = only(
        refused(
            document(
                '<policy id="v" priority="1"><priority><tier bid="1" rate-bps="8000"/>'
                '<tier bid="2"/></priority></policy>',
                NAMESPACE,
            )
        )
    )
    assert "priority action needs a version-2 document" in problem.reason
    assert (problem.policy_id, problem.line) == ("v", 4)


@pytest.mark.parametrize(
    ("action", "field", "words"),
    [
        ('<priority><tier bid="1" rate-bps="8000"/></priority>', "priority", "Missing child"),
        (
            '<priority><tier bid="1"/><tier bid="2"/></priority>',
            "priority",
            "tier 1 (BID 1) has no rate",
        ),
        (
            '<priority><tier bid="1" rate-bps="9000"/><tier bid="2" rate-bps="9000"/></priority>',
            "priority",
            "the last tier (BID 2) has a rate",
        ),
        (
            '<priority><tier bid="1" rate-bps="7999"/><tier bid="2"/></priority>',
            "priority.tier",
            "7999",
        ),
        (
            '<priority><tier bid="1" rate-bps="fast"/><tier bid="2"/></priority>',
            "priority.tier",
            "rate-bps",
        ),
        (
            '<priority><tier bid="2" rate-bps="9000"/><tier bid="2"/></priority>',
            "priority",
            "BID repeated in priority/fallback list [2, 2]",
        ),
        (
            '<priority><tier bid="1" rate-bps="9000"/><tier bid="2"/><fallback bid="1"/>'
            "</priority>",
            "priority",
            "BID repeated",
        ),
        (
            '<priority><tier bid="1" rate-bps="9000"/><tier bid="2"/><path bid="3"/></priority>',
            "priority.path",
            "not expected",
        ),
    ],
)
def test_priority_refusals_name_policy_field_and_line(action: str, field: str, words: str) -> None:
    problem = only(refused(document(f'<policy id="p" priority="1">\n{action}\n</policy>')))
    assert words in problem.reason
    assert problem.policy_id == "p"
    assert problem.field == field
    assert problem.line == 5


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (lambda: Tier(bid=1, rate_bps=7999), "greater than or equal to 8000"),
        (lambda: Tier(bid=1, rate_bps=10**11 + 1), "less than or equal to 100000000000"),
        (lambda: Priority(tiers=(Tier(bid=1, rate_bps=9000),)), "at least 2 items"),
        (lambda: Priority(tiers=(Tier(bid=1), Tier(bid=2))), "tier 1 (BID 1) has no rate"),
        (
            lambda: Priority(tiers=(Tier(bid=1, rate_bps=9000), Tier(bid=2, rate_bps=9000))),
            "the last tier (BID 2) has a rate",
        ),
        (
            lambda: Priority(
                tiers=(Tier(bid=1, rate_bps=9000), Tier(bid=2)), fallbacks=tuple(range(3, 10))
            ),
            "9 BIDs",
        ),
    ],
)
def test_priority_models_refuse_the_same_without_a_document(build: object, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        build()  # type: ignore[operator]
    assert words in str(info.value)
