"""Echoes of untrusted text, and the messages that carry them: whatever the input, building the
refusal (or warning, or dead letter) validates, and the result is printable, bounded and
survives the bus unchanged."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.contracts.echo import ID_LIMIT, REASON_LIMIT, echo
from services.contracts.errors import InvalidInput, Problem
from services.contracts.messages import (
    DeadLetter,
    PolicyStatus,
    Refusal,
    StatusWarning,
    decode,
    encode,
)
from services.deadletter import dead_letter

texts = st.text(max_size=600) | st.sampled_from(["a;b", 'a"b', "a\nb", "x" * 65, "\u00e9" * 300])


@settings(max_examples=500)
@given(texts, st.sampled_from([32, ID_LIMIT, REASON_LIMIT]))
def test_an_echo_is_printable_bounded_and_idempotent(value: str, limit: int) -> None:
    echoed = echo(value, limit)
    assert echoed.isascii()
    assert echoed.isprintable()
    assert len(echoed) <= limit
    assert echo(echoed, limit) == echoed
    if value.isascii() and value.isprintable() and len(value) <= limit:
        assert echoed == value


@pytest.mark.parametrize(
    ("value", "echoed"),
    [
        ("a;b", "a;b"),
        ("a\nb", "a\\x0ab"),
        ("caf\u00e9", "caf\\xe9"),
        ("\u202e", "\\u202e"),
        ("\U0001f600", "\\U0001f600"),
        ("y" * 100, "y" * 60 + "... (100 characters)"),
    ],
)
def test_echo_examples(value: str, echoed: str) -> None:
    assert echo(value, ID_LIMIT) == echoed


def test_an_echo_needs_room_for_its_marker() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        echo("x", 8)


@settings(max_examples=300)
@given(texts, texts, texts)
def test_refusals_and_warnings_accept_any_text_and_survive_the_bus(
    reason: str, policy_id: str, field: str
) -> None:
    refusal = Refusal(reason=reason, policy_id=policy_id, field=field, line=3)
    warning = StatusWarning(reason=reason, policy_id=policy_id, field=field)
    status = PolicyStatus(
        sender="ha1",
        node="ha1",
        mobile_router="mr1",
        direction="downlink",
        result="refused",
        version=1,
        refusals=(refusal,),
        warnings=(warning,),
    )
    assert decode(PolicyStatus, encode(status)) == status
    assert refusal.policy_id == echo(policy_id, ID_LIMIT)
    problem = Problem(reason, policy_id, field, 3)
    assert str(problem).isascii()
    assert str(problem).isprintable()
    assert str(InvalidInput([problem])).isprintable()


@settings(max_examples=200)
@given(texts, st.binary(max_size=3000))
def test_a_dead_letter_can_be_built_for_any_input(reason: str, payload: bytes) -> None:
    letter = dead_letter(
        "ha1", "prem", source=reason, input_kind=reason, payload=payload, error=ValueError(reason)
    )
    assert decode(DeadLetter, encode(letter)) == letter
    assert letter.payload_bytes == len(payload)
    assert len(letter.payload_head) <= 4 * 1024 // 3 + 4
