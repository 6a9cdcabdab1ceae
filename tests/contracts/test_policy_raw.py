"""The one-call reading of a document (`policy_raw`) and the model-by-model one agree.

`policy_xml.parse` takes the fast way first and builds the models one by one only when that
fails, for precise problems. So the fast way must accept exactly the documents the other
accepts, with an equal message, and fail (for the other to refuse) on every one it refuses.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from lxml import etree

from services.contracts import policy_raw, policy_xml
from services.contracts.errors import PolicyDocumentError
from services.contracts.policy import PolicyMessage
from tests.contracts.test_policy_xml_properties import (
    documents_with_edited_values,
    messages,
    mutated_documents,
)

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _both_ways(data: bytes) -> None:
    """On a document that passed the parser's and the schema's checks: same answer."""
    try:
        root = policy_xml._parse_tree(data, max_bytes=policy_xml.DEFAULT_MAX_BYTES)
        policy_xml._check_schema(root)
    except PolicyDocumentError:
        return  # refused before either way runs
    try:
        slow: PolicyMessage | None = policy_xml._message(root)
    except PolicyDocumentError:
        slow = None
    if slow is None:
        with pytest.raises((ValueError, LookupError, TypeError)):
            policy_raw.message(root)
    else:
        assert policy_raw.message(root) == slow


@SETTINGS
@given(messages())
def test_a_valid_message_reads_equal_both_ways(message: PolicyMessage) -> None:
    root = etree.fromstring(policy_xml.render(message))
    assert policy_raw.message(root) == message == policy_xml._message(root)


@SETTINGS
@given(documents_with_edited_values())
def test_documents_with_wrong_values_are_refused_by_both_ways(data: bytes) -> None:
    _both_ways(data)


@SETTINGS
@given(mutated_documents())
def test_mutated_documents_get_the_same_answer_both_ways(data: bytes) -> None:
    _both_ways(data)


def test_a_refused_document_still_names_the_policy_and_field() -> None:
    """The fast way fails on the bad range; the refusal comes from the precise way."""
    document = (
        b'<policy-message xmlns="urn:multinet:flow-policy:1" node="ha1" mobile-router="mr1" '
        b'direction="downlink" version="3"><install><policy id="web" priority="5"><selector>'
        b'<destination-port first="90" last="80"/><next-header>6</next-header></selector>'
        b'<forward bid="1"/></policy></install></policy-message>'
    )
    with pytest.raises(PolicyDocumentError) as refused:
        policy_xml.parse(document)
    (problem,) = refused.value.problems
    assert problem.policy_id == "web"
    assert problem.field == "selector.destination-port"
    assert "after its end" in problem.reason
