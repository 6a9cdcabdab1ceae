"""The decision thread's rules on a fake clock, fake gateway and fake workers.

The fake workers are the PREM's own pure policy-set logic, so "both applied" means a worker
would have accepted every document, and `enforced()` asks them where the video flow goes.
"""

from __future__ import annotations

import logging

import pytest

from services.contracts.messages import BindingEventKind, PolicyStatus
from services.nsa.core import Reason, TriggerKind
from services.nsa.core.delivering import DEADLINE_GRACE_S
from tests.nsa.enginebed import TOPICS, make_bed
from tests.nsa.factories import HA_NODE, MR, MR_NODE

K = BindingEventKind
GOOD = {"rtt_ms": 20.0}
SLOW = {"rtt_ms": 200.0}


def test_nothing_is_decided_until_every_measured_link_has_a_binding() -> None:
    bed = make_bed()
    bed.metrics(1, **GOOD)
    bed.binding(1, K.REGISTERED)
    bed.at(bed.now + 1.0)
    bed.metrics(2, **SLOW)
    bed.at(bed.now + 1.0)
    assert bed.records == [], "BID 2 has no binding event yet: a restart must not guess"
    assert bed.gateway.calls == []
    bed.binding(2, K.REGISTERED)
    assert [r.explanation.trigger.kind for r in bed.records] == [TriggerKind.START]
    assert bed.kinds() == ["install"], "the first call installs the whole set on both nodes"
    assert bed.enforced() == (1, 1)
    assert bed.records[0].sender == "nsa-t"


def test_the_first_decision_waits_for_every_links_first_report() -> None:
    bed = make_bed()
    bed.metrics(1, **SLOW)
    bed.binding(1, K.REGISTERED)
    assert bed.records == [], "one link known: its other links may report within the period"
    bed.at(bed.now + 0.5)
    bed.metrics(2, **GOOD)
    bed.binding(2, K.REGISTERED)
    assert bed.records == []
    bed.at(bed.now + 1.0)
    assert len(bed.records) == 1
    assert bed.bid() == 2, "decided on both links, not stuck on the first one heard"


def test_the_start_up_hold_ends_in_a_decision_without_the_missing_bindings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bed = make_bed()
    bed.metrics(1, **GOOD)
    with caplog.at_level(logging.WARNING):
        bed.at(1005.0)
    assert "deciding without binding events for BID [1]" in caplog.text
    assert bed.records[-1].explanation.for_class("video").reason is Reason.NO_ELIGIBLE_LINK
    assert bed.kinds() == ["install"]
    assert bed.enforced() == (None, None)


def test_a_burst_of_metrics_for_one_router_is_decided_once() -> None:
    bed = make_bed()
    bed.start({1: GOOD, 2: SLOW})
    before = len(bed.records)
    raws = []
    for step in range(20):
        for bid, rtt in ((1, 300.0 + step), (2, 10.0 + step)):
            topic = TOPICS.link_metrics(MR_NODE, f"if{bid}")
            from services.contracts.messages import encode
            from tests.nsa.factories import metrics

            payload = encode(metrics(bid, rtt_ms=rtt, timestamp=bed.now))
            raw = bed.routes.route(topic, payload)
            assert raw is not None
            raws.append(raw)
    bed.batch(raws)
    assert len(bed.records) == before + 1
    assert bed.records[-1].explanation.trigger.kind is TriggerKind.METRICS


def test_reports_inside_the_tolerance_are_applied_but_not_decided() -> None:
    bed = make_bed()
    bed.start({1: GOOD, 2: SLOW})
    before = len(bed.records)
    for rtt in (20.1, 19.9, 20.2):
        bed.metrics(1, rtt_ms=rtt)
    assert len(bed.records) == before
    assert bed.engine.stats.immaterial == 3
    assert bed.engine.view_of(MR).links[1].rtt_ms == 20.2, "the view follows every report"
    bed.metrics(1, rtt_ms=400.0)
    assert len(bed.records) == before + 1


def test_a_better_link_waits_its_dwell_time_then_the_timer_moves_the_class() -> None:
    bed = make_bed()
    bed.start({1: GOOD, 2: SLOW})
    bed.metrics(2, rtt_ms=5.0)
    assert bed.bid() == 1
    assert bed.records[-1].explanation.for_class("video").reason is Reason.CHALLENGER_PENDING
    bed.at(bed.now + 1.0)
    assert bed.bid() == 1
    bed.at(bed.now + 1.01)
    assert bed.bid() == 2
    assert bed.records[-1].explanation.trigger.kind is TriggerKind.TIMER
    assert bed.kinds() == ["install", "update"], "a move is an Update of both nodes"
    assert bed.enforced() == (2, 2)


def test_handover_moves_at_once_and_registered_brings_the_class_back() -> None:
    bed = make_bed()
    bed.start({1: GOOD, 2: SLOW})
    bed.binding(1, K.HANDOVER_STARTED)
    assert bed.bid() == 2
    assert bed.enforced() == (2, 2)
    bed.binding(1, K.REGISTERED)
    assert bed.bid() == 1
    assert bed.records[-1].explanation.for_class("video").reason is Reason.HANDOVER_COMPLETED
    assert bed.enforced() == (1, 1)


def test_a_care_of_address_gone_from_the_link_moves_the_class_before_the_binding_update() -> None:
    bed = make_bed()
    bed.start({1: GOOD, 2: SLOW})
    bed.binding(1, K.REFRESHED, care_of="2001:db8:1::2")
    bed.link(1, True, ("fe80::2", "2001:db8:1::2/64", "2001:db8:1::3/64"))  # a new one beside
    assert bed.bid() == 1
    bed.link(1, True, ("fe80::2", "2001:db8:1::3/64"))  # the care-of address is gone
    assert bed.bid() == 2, "moved on the monitor's word, before any BU"
    assert bed.records[-1].explanation.trigger.kind is TriggerKind.HANDOVER_STARTED
    assert bed.enforced() == (2, 2)
    bed.binding(1, K.HANDOVER_STARTED, care_of="2001:db8:1::3")  # the BU: nothing new
    assert bed.bid() == 2
    bed.binding(1, K.COA_CHANGED, care_of="2001:db8:1::3")
    assert bed.bid() == 1
    assert bed.enforced() == (1, 1)


def test_one_call_in_flight_per_router_and_the_next_plan_follows_its_answer() -> None:
    bed = make_bed()
    bed.gateway.hold = True
    bed.start({1: GOOD, 2: SLOW})
    bed.binding(1, K.HANDOVER_STARTED)
    assert len(bed.gateway.calls) == 1, "the Install is in flight: the move waits for it"
    bed.release()
    assert len(bed.gateway.calls) == 2
    assert bed.gateway.calls[-1].operation == "update"
    bed.release()
    assert bed.enforced() == (2, 2)


def test_a_call_without_answer_is_lost_then_installed_again() -> None:
    bed = make_bed(gateway={"mode": "dry-run", "call_timeout_s": 3.0})
    bed.gateway.hold = True
    bed.start({1: GOOD, 2: SLOW})
    first = bed.gateway.calls[-1]
    bed.at(bed.now + 3.0 + DEADLINE_GRACE_S + 0.1)
    assert bed.engine.stats.failed_calls == 1
    bed.at(bed.now + 1.1)  # the back-off
    assert len(bed.gateway.calls) == 2
    second = bed.gateway.calls[-1]
    assert second.operation == "install"
    assert second.downlink.version > first.downlink.version
    bed.engine.delivered(bed.gateway.answer(first), bed.now)  # a late answer changes nothing
    assert bed.engine.slots[MR].call is second
    bed.release()
    assert bed.enforced() == (1, 1)


def test_a_refusal_backs_off_and_resynchronises_with_an_install(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bed = make_bed()
    bed.gateway.ha.state = bed.gateway.ha.state.model_copy(update={"version": 50})
    with caplog.at_level(logging.WARNING):
        bed.start({1: GOOD, 2: SLOW})
    assert "ha1 refused" in caplog.text
    assert bed.enforced() == (1, None), "the MR applied, the HA refused the stale version"
    bed.at(bed.now + 1.1)
    assert bed.kinds() == ["install", "install"]
    assert bed.gateway.calls[-1].downlink.version == 51, "above the version the HA reported"
    assert bed.enforced() == (1, 1)


def test_an_unreached_node_is_lost_and_gets_a_full_install_on_its_hello() -> None:
    bed = make_bed()
    bed.gateway.down = {MR_NODE}
    bed.start({1: GOOD, 2: SLOW})
    assert bed.enforced() == (None, 1)
    bed.gateway.down = set()
    bed.hello(MR_NODE, version=0)  # the worker restarted with nothing
    assert bed.kinds() == ["install", "install"]
    assert bed.enforced() == (1, 1)


def test_a_restarted_worker_reporting_another_version_gets_a_full_install() -> None:
    bed = make_bed()
    bed.start({1: GOOD, 2: SLOW})
    bed.gateway.mr.state = bed.gateway.mr.state.model_copy(update={"version": 0, "policies": ()})
    bed.hello(MR_NODE, version=0)
    assert bed.kinds() == ["install", "install"]
    assert bed.enforced() == (1, 1)
    bed.binding(1, K.HANDOVER_STARTED)
    assert bed.kinds()[-1] == "update", "back to Updates once both nodes are known"


def test_statuses_on_the_bus_feed_the_ledgers() -> None:
    bed = make_bed()
    bed.start({1: GOOD, 2: SLOW})
    version = bed.engine.slots[MR].ledgers.ha.version
    bed.status(
        PolicyStatus(
            sender=HA_NODE,
            node=HA_NODE,
            mobile_router=MR,
            direction="downlink",
            result="applied",
            version=version + 7,
        )
    )
    assert bed.kinds()[-1] == "install", "an unexpected version: resynchronise that node"
    assert bed.gateway.calls[-1].downlink.version == version + 8


def test_stale_and_malformed_inputs_are_refused_with_their_topic(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bed = make_bed()
    bed.start({1: GOOD, 2: SLOW})
    bed.now -= 10
    bed.metrics(1, rtt_ms=400.0)
    assert bed.engine.stats.stale == 1
    assert bed.bid() == 1, "an older report never overrides a newer one"
    bed.now += 10
    with caplog.at_level(logging.WARNING):
        bed.feed(TOPICS.link_metrics(MR_NODE, "if1"), b'{"kind": "link-metrics"}')
        bed.feed(TOPICS.binding_event(MR, 1), b"not json")
    assert f"on {TOPICS.link_metrics(MR_NODE, 'if1')}" in caplog.text
    assert f"malformed binding-event on {TOPICS.binding_event(MR, 1)}" in caplog.text
    assert bed.engine.stats.refused == 2


def test_scheme_2_sends_the_symmetric_downlink_document_alone() -> None:
    bed = make_bed(scheme=2)
    bed.start({1: GOOD, 2: SLOW})
    call = bed.gateway.calls[-1]
    assert call.uplink is None
    assert call.downlink.symmetric
    assert bed.enforced() == (1, 1)
    bed.binding(1, K.HANDOVER_STARTED)
    assert bed.enforced() == (2, 2)


def test_bad_preferences_keep_the_last_good_ones(caplog: pytest.LogCaptureFixture) -> None:
    bed = make_bed(decision={"dwell_s": 0.0, "margin": 0.05})
    bed.start({1: {"rtt_ms": 20.0, "cost_per_mb": 1.0}, 2: {"rtt_ms": 60.0, "cost_per_mb": 0.0}})
    assert bed.bid() == 1, "delay-only weights from the file"
    cost_only = {
        "sender": "operator",
        "mobile_router": MR,
        "entries": [{"default": {"cost": 1, "delay": 0, "bandwidth": 0, "security": 0}}],
    }
    import json

    bed.feed(TOPICS.preferences(MR), json.dumps(cost_only).encode())
    assert bed.bid() == 2
    broken = {**cost_only, "entries": [{"default": {"cost": -1}}]}
    with caplog.at_level(logging.WARNING):
        bed.feed(TOPICS.preferences(MR), json.dumps(broken).encode())
        unknown = {**cost_only, "entries": [{"classes": {"vidoe": {"cost": 1}}}]}
        bed.feed(TOPICS.preferences(MR), json.dumps(unknown).encode())
    assert "entries.0.default.cost" in caplog.text
    assert "entries.0.classes.vidoe" in caplog.text
    bed.metrics(1, rtt_ms=25.0, cost_per_mb=1.0)
    assert bed.bid() == 2, "the cost-only preferences still decide"
    bed.feed(TOPICS.preferences(MR), b"")  # retained message deleted: back to the file
    assert bed.bid() == 1


def test_a_binding_refresh_is_not_decided_on() -> None:
    bed = make_bed()
    bed.start({1: GOOD, 2: SLOW})
    before = len(bed.records)
    bed.binding(1, K.REFRESHED)
    bed.binding(2, K.REGISTERED)
    assert len(bed.records) == before
    bed.binding(2, K.DEREGISTERED)
    assert len(bed.records) == before + 1
