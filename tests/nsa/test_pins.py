"""Operator pins: a class held on a BID for a time, released, expired, refused, audited.

The engine on a fake clock, fake gateway and fake workers (`enginebed`): a pin request on the
router's pin topic is checked, audited, and decided like any input, and the fake workers
enforce what the plan sends. The pure override (`pins.overridden`) is tested through it and
directly where the engine cannot reach (a BID down).
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from services.contracts.messages import PIN_MAX_S, BindingEventKind, PinRequest
from services.nsa.core import Reason, render
from services.nsa.core.pins import Pin, overridden, when
from tests.nsa.enginebed import TOPICS, Bed, make_bed
from tests.nsa.factories import MR

K = BindingEventKind
GOOD = {"rtt_ms": 20.0}
SLOW = {"rtt_ms": 200.0}


def started() -> Bed:
    bed = make_bed()
    bed.start({1: GOOD, 2: SLOW})
    assert bed.bid() == 1
    assert bed.enforced() == (1, 1)
    return bed


def pin(bed: Bed, **fields: Any) -> None:
    data: dict[str, Any] = {
        "sender": "console",
        "mobile_router": MR,
        "class_name": "video",
        "bid": 2,
        "duration_s": 60,
        "user": "alice",
        "reason": "maintenance on wlan",
        "timestamp": bed.now,
    }
    data.update(fields)
    bed.feed(TOPICS.pin(MR), PinRequest.model_validate(data))


def test_a_pin_moves_the_class_to_its_bid_on_both_workers_and_explains_it() -> None:
    bed = started()
    pin(bed)
    assert bed.bid() == 2, "the pin wins over the better link at once (no dwell time)"
    assert bed.enforced() == (2, 2), "delivered like any decision: both workers enforce it"
    entry = bed.records[-1].explanation.for_class("video")
    assert entry.reason is Reason.OPERATOR_OVERRIDE
    assert entry.detail.startswith(f"operator override by alice until {when(bed.now + 60)}")
    assert "maintenance on wlan" in entry.detail
    assert "operator override by alice" in render(bed.records[-1].explanation)
    [audit] = bed.audits
    assert (audit.user, audit.action, audit.outcome, audit.bid) == ("alice", "pin", "applied", 2)
    assert audit.until == pytest.approx(bed.now + 60)
    assert audit.class_name == "video"


def test_a_pin_holds_against_better_metrics_then_expires_audited() -> None:
    bed = started()
    pin(bed, duration_s=30)
    pinned_at = bed.now
    bed.at(bed.now + 10)
    bed.metrics(1, rtt_ms=5.0)
    bed.at(bed.now + 10)
    assert bed.bid() == 2, "scores and the dwell time do not move a pinned class"
    bed.at(pinned_at + 30.5)
    assert [a.outcome for a in bed.audits] == ["applied", "expired"]
    assert bed.records[-1].explanation.for_class("video").reason is not Reason.OPERATOR_OVERRIDE
    bed.metrics(1, rtt_ms=5.0)
    bed.at(bed.now + bed.settings.decision.dwell_s + 0.5)
    bed.metrics(1, rtt_ms=5.0)
    assert bed.bid() == 1, "after the pin the usual hysteresis takes the class back"
    assert bed.enforced() == (1, 1)


def test_a_release_ends_the_pin_at_once() -> None:
    bed = started()
    pin(bed)
    assert bed.bid() == 2
    pin(bed, bid=None, duration_s=None, release=True, reason="")
    assert [a.outcome for a in bed.audits] == ["applied", "released"]
    assert bed.records[-1].explanation.for_class("video").reason is not Reason.OPERATOR_OVERRIDE
    assert bed.engine.slots[MR].pins == {}


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"class_name": "voice"}, "class_name"),
        ({"bid": 9}, "bid"),
        ({"bid": None, "duration_s": None, "release": True}, "class_name"),  # nothing pinned
    ],
)
def test_a_refused_pin_is_audited_with_the_field_and_changes_nothing(
    fields: dict[str, Any], field: str
) -> None:
    bed = started()
    decisions = len(bed.records)
    pin(bed, **fields)
    [audit] = bed.audits
    assert audit.outcome == "refused"
    assert audit.field == field
    assert audit.user == "alice"
    assert bed.bid() == 1
    assert len(bed.records) == decisions, "a refused pin is not decided"


def test_a_pin_on_another_routers_topic_is_refused() -> None:
    bed = started()
    request = PinRequest(
        sender="console", mobile_router="mr9", class_name="video", bid=2, duration_s=5, user="a"
    )
    bed.feed(TOPICS.pin(MR), request)
    [audit] = bed.audits
    assert (audit.outcome, audit.field) == ("refused", "mobile_router")


def test_a_pin_to_a_bid_that_is_down_is_not_in_force_and_says_so() -> None:
    bed = started()
    pin(bed)
    assert bed.bid() == 2
    bed.link(2, up=False)
    entry = bed.records[-1].explanation.for_class("video")
    assert bed.bid() == 1, "the BID is down: the NSA's own choice (the fallbacks)"
    assert entry.reason is not Reason.OPERATOR_OVERRIDE
    assert "not in force: BID 2 is unusable (link-down)" in entry.detail
    bed.link(2, up=True)
    assert bed.bid() == 2, "back in force when the BID is"


@pytest.mark.parametrize(
    "fields",
    [
        {"duration_s": 0},
        {"duration_s": PIN_MAX_S + 1},
        {"duration_s": None},
        {"bid": None},
        {"release": True},  # a release names no BID
        {"reason": "x" * 201},
        {"reason": "two\nlines"},
        {"user": "not a user"},
    ],
)
def test_the_pin_request_contract_bounds_its_fields(fields: dict[str, Any]) -> None:
    data: dict[str, Any] = {
        "sender": "console",
        "mobile_router": MR,
        "class_name": "video",
        "bid": 2,
        "duration_s": 60,
        "user": "alice",
    }
    with pytest.raises(ValidationError):
        PinRequest.model_validate({**data, **fields})


def test_an_expired_pin_is_not_applied_and_the_wake_time_is_its_end() -> None:
    bed = started()
    record = bed.records[-1]
    slot = bed.engine.slots[MR]
    from services.nsa.core.decide import Decision

    decision = Decision(state=slot.state, explanation=record.explanation, wake_at=None)
    config = bed.engine.store.config_for(MR)
    gone = Pin(class_name="video", bid=2, user="a", since=0, until=bed.now)
    assert overridden(decision, config, {"video": gone}, bed.now) is decision
    live = gone.model_copy(update={"until": bed.now + 5})
    result = overridden(decision, config, {"video": live}, bed.now)
    assert result.state.classes["video"].flows == (2,)
    assert result.wake_at == pytest.approx(bed.now + 5, abs=1e-3)
