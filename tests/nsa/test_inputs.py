"""Inputs: bad configuration refused naming the field, and the view kept from bus messages."""

from __future__ import annotations

from typing import Any

import pytest

from services.contracts.errors import InvalidInput
from services.contracts.messages import BindingEvent, BindingEventKind, LinkState
from services.nsa.core import (
    ApplicationProfile,
    BindingStatus,
    MrState,
    MrView,
    NsaConfig,
    OperatorRules,
    Rule,
    Trigger,
    TriggerKind,
    apply_binding_event,
    apply_link_state,
    apply_metrics,
    decide,
    load,
)
from services.nsa.core.eligibility import violations
from tests.nsa.factories import MR, binding, config, link_state, metrics, profile, view_of

K = BindingEventKind
VIDEO: dict[str, Any] = {"name": "video", "selectors": [{"next_header": 17}]}


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"settings": {"dwel_s": 3}}, "settings.dwel_s", "Extra inputs"),
        ({"settings": {"margin": 2}}, "settings.margin", "less than or equal to 1"),
        ({"settings": {"method": "ahp"}}, "settings.method", "utility"),
        ({"profiles": [{**VIDEO, "steering": "fastest"}]}, "profiles.0.steering", "best"),
        ({"profiles": [{**VIDEO, "selectors": []}]}, "profiles.0.selectors", "at least 1"),
        ({"profiles": [{**VIDEO, "name": "vid eo"}]}, "profiles.0.name", "pattern"),
        (
            {"profiles": [{**VIDEO, "requirements": {"max_loss": 1.5}}]},
            "profiles.0.requirements.max_loss",
            "less than or equal to 1",
        ),
        (
            {"profiles": [{**VIDEO, "selectors": [{"dst_port": {"first": 1, "last": 2}}]}]},
            "profiles.0.selectors.0",
            "port selector needs next_header",
        ),
        ({"profiles": [{**VIDEO, "order": [2]}]}, "profiles.0", "only for priority"),
        ({"profiles": [{**VIDEO, "steering": "priority"}]}, "profiles.0", "needs an `order`"),
        (
            {"profiles": [{**VIDEO, "steering": "priority", "order": ["wifi"]}]},
            "profiles.0.order.0",
            "unknown access technology 'wifi'",
        ),
        (
            {"preferences": [{"default": {"cost": -1}}]},
            "preferences.0.default.cost",
            "greater than or equal to 0",
        ),
        (
            {"preferences": [{"default": {"cost": 0, "delay": 0, "bandwidth": 0, "security": 0}}]},
            "preferences.0.default",
            "at least one",
        ),
        ({"preferences": [{"user": "alice"}]}, "preferences.0", "must name their mobile_router"),
        (
            {"rules": {"classes": {"video": {"technologies": ["lte", "5g"]}}}},
            "rules.classes.video.technologies",
            "unknown access technology '5g'",
        ),
        (
            {"profiles": [VIDEO], "rules": {"classes": {"vidoe": {"max_cost_per_mb": 1}}}},
            "",
            "unknown class named at rules.classes.vidoe",
        ),
        ({"rules": {"excluded": [{"bid": 0}]}}, "rules.excluded.0.bid", "greater than or equal"),
        ({"profiles": [VIDEO, VIDEO]}, "", "same name"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_configuration_is_refused_naming_the_field(
    data: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        load(NsaConfig, data, where="nsa")
    problem = caught.value.problems[0]
    assert problem.field is not None
    assert problem.field.startswith(f"nsa.{field}" if field else "nsa")
    assert words in str(caught.value)


def test_models_are_frozen() -> None:
    cfg = config(profile())
    with pytest.raises(ValueError, match="frozen"):
        cfg.settings.dwell_s = 1  # type: ignore[misc]


def test_class_dscp_fills_selectors() -> None:
    p = profile(ports=(1, 2), requirements={"dscp": 46})
    assert [s.dscp for s in p.flow_selectors()] == [46, 46]
    with pytest.raises(ValueError, match="selector 0 has DSCP 10, the class 46"):
        ApplicationProfile.model_validate(
            {"name": "v", "selectors": [{"dscp": 10}], "requirements": {"dscp": 46}}
        )


@pytest.mark.parametrize(
    ("events", "status", "trigger"),
    [
        ([K.REGISTERED], BindingStatus.LIVE, TriggerKind.BINDING),
        ([K.REGISTERED, K.REFRESHED], BindingStatus.LIVE, TriggerKind.BINDING),
        ([K.REGISTERED, K.HANDOVER_STARTED], BindingStatus.HANDOVER, TriggerKind.HANDOVER_STARTED),
        (
            [K.REGISTERED, K.HANDOVER_STARTED, K.COA_CHANGED],
            BindingStatus.LIVE,
            TriggerKind.HANDOVER_COMPLETED,
        ),
        (
            [K.HANDOVER_STARTED, K.REGISTERED],
            BindingStatus.LIVE,
            TriggerKind.HANDOVER_COMPLETED,
        ),
        ([K.REGISTERED, K.DEREGISTERED], BindingStatus.GONE, TriggerKind.BINDING),
        ([K.REGISTERED, K.EXPIRED], BindingStatus.GONE, TriggerKind.BINDING),
        ([K.REJECTED], BindingStatus.GONE, TriggerKind.BINDING),
    ],
    ids=[
        "registered",
        "refreshed",
        "handover",
        "coa",
        "handover-registered",
        "dereg",
        "expired",
        "rejected",
    ],
)
def test_binding_events(
    events: list[BindingEventKind], status: BindingStatus, trigger: TriggerKind
) -> None:
    view = MrView(mobile_router=MR)
    seen = Trigger(kind=TriggerKind.START)
    for t, kind in enumerate(events):
        view, seen = apply_binding_event(view, binding(3, kind), float(t))
    assert view.bindings[3].status is status
    assert (seen.kind, seen.bid) == (trigger, 3)


def test_binding_since_counts_from_the_status_change() -> None:
    view = MrView(mobile_router=MR)
    view, _ = apply_binding_event(view, binding(1, K.REGISTERED), 1.0)
    view, _ = apply_binding_event(view, binding(1, K.REFRESHED), 5.0)
    assert view.bindings[1].since == 1.0


def test_binding_event_of_another_router_is_refused() -> None:
    other = BindingEvent(sender="ha", event=K.REGISTERED, mobile_router="mr9", bid=1)
    with pytest.raises(InvalidInput) as caught:
        apply_binding_event(MrView(mobile_router=MR), other, 0.0)
    assert caught.value.problems[0].field == "mobile_router"


def test_link_state_before_metrics_is_not_eligible() -> None:
    view, trigger = apply_link_state(MrView(mobile_router=MR), link_state(2, True), 0.0)
    view, _ = apply_binding_event(view, binding(2, K.REGISTERED), 0.0)
    assert trigger.kind is TriggerKind.LINK_STATE
    found = violations(view, 2, profile(), config(profile()), 0.0)
    assert [v.rule for v in found] == [Rule.NO_METRICS]
    view, _ = apply_metrics(view, metrics(2), 1.0)
    assert violations(view, 2, profile(), config(profile()), 1.0) == ()


def test_link_keeps_down_state_across_metrics() -> None:
    view = view_of({1: {}})
    view, _ = apply_link_state(view, link_state(1, False), 1.0)
    view, _ = apply_metrics(view, metrics(1), 2.0)
    assert not view.links[1].up
    assert view.links[1].updated_at == 2.0


def test_completed_handover_brings_a_down_link_up_until_the_next_state() -> None:
    view = view_of({1: {}})
    view, _ = apply_link_state(view, link_state(1, False), 1.0)
    view, _ = apply_binding_event(view, binding(1, K.HANDOVER_STARTED), 2.0)
    assert not view.links[1].up  # the handover's start proves nothing about the link
    view, _ = apply_binding_event(view, binding(1, K.COA_CHANGED), 3.0)
    assert view.links[1].up  # its BU/BA crossed the link
    view, _ = apply_link_state(view, link_state(1, False), 4.0)
    assert not view.links[1].up


def _registered_at(care_of: str) -> MrView:
    view = view_of({1: {}})
    event = BindingEvent(
        sender="ha", event=K.REGISTERED, mobile_router=MR, bid=1, care_of_address=care_of
    )
    view, _ = apply_binding_event(view, event, 1.0)
    return view


def _listing(*addresses: str) -> LinkState:
    return LinkState(sender=MR, interface="if1", bid=1, up=True, carrier=True, addresses=addresses)


def test_a_care_of_address_gone_from_the_link_starts_a_handover() -> None:
    view, trigger = apply_link_state(_registered_at("2001:db8:1::2"), _listing("fe80::1"), 2.0)
    assert view.bindings[1].status is BindingStatus.HANDOVER
    assert view.bindings[1].handover_at == 2.0
    assert trigger.kind is TriggerKind.HANDOVER_STARTED
    assert "2001:db8:1::2 gone from if1" in trigger.detail


@pytest.mark.parametrize(
    "listed",
    [("2001:db8:1::2",), ("2001:db8:1:0::2/64", "fe80::1"), ("2001:DB8:1::2/64",)],
)
def test_a_listed_care_of_address_in_any_spelling_keeps_the_binding(
    listed: tuple[str, ...],
) -> None:
    view, trigger = apply_link_state(_registered_at("2001:db8:1::2"), _listing(*listed), 2.0)
    assert view.bindings[1].status is BindingStatus.LIVE
    assert trigger.kind is TriggerKind.LINK_STATE


def test_a_state_without_addresses_changes_no_binding() -> None:
    view, trigger = apply_link_state(_registered_at("2001:db8:1::2"), _listing(), 2.0)
    assert view.bindings[1].status is BindingStatus.LIVE
    assert trigger.kind is TriggerKind.LINK_STATE


def test_an_address_handover_ends_when_the_address_is_back_or_with_the_next_bu() -> None:
    view, _ = apply_link_state(_registered_at("2001:db8:1::2"), _listing("fe80::1"), 2.0)
    back, trigger = apply_link_state(view, _listing("2001:db8:1::2/64"), 3.0)
    assert back.bindings[1].status is BindingStatus.LIVE
    assert trigger.kind is TriggerKind.HANDOVER_COMPLETED
    # The BU that follows an address change: reported as handover-started (nothing new),
    # then coa-changed, which ends it; from then on the address listing no longer does.
    started = BindingEvent(
        sender="ha", event=K.HANDOVER_STARTED, mobile_router=MR, bid=1, care_of_address="::3"
    )
    view, trigger = apply_binding_event(view, started, 2.5)
    assert view.bindings[1].handover_at == 2.0
    still, trigger = apply_link_state(view, _listing("2001:db8:1::2"), 3.0)
    assert still.bindings[1].status is BindingStatus.HANDOVER
    assert trigger.kind is TriggerKind.LINK_STATE


def test_plain_registration_does_not_bring_a_down_link_up() -> None:
    view = view_of({1: {}})
    view, _ = apply_link_state(view, link_state(1, False), 1.0)
    view, _ = apply_binding_event(view, binding(1, K.REFRESHED), 2.0)
    assert not view.links[1].up


@pytest.mark.parametrize(
    ("rules", "requirements", "values", "expected"),
    [
        ({}, {}, {}, []),
        ({"excluded": [{"bid": 1}]}, {}, {}, [Rule.EXCLUDED_BID]),
        ({"excluded": [{"bid": 1, "mobile_router": "mr9"}]}, {}, {}, []),
        ({"excluded": [{"bid": 1, "class_name": "video"}]}, {}, {}, [Rule.EXCLUDED_BID]),
        ({"classes": {"video": {"technologies": ["lte"]}}}, {}, {}, [Rule.TECHNOLOGY]),
        ({"default": {"technologies": ["lte"]}}, {}, {}, [Rule.TECHNOLOGY]),
        ({"default": {"max_cost_per_mb": 0.1}}, {}, {"cost_per_mb": 0.2}, [Rule.COST_CAP]),
        ({"default": {"max_cost_per_mb": 0.1}}, {}, {"cost_per_mb": None}, [Rule.COST_CAP]),
        ({"default": {"min_security": 2}}, {}, {}, [Rule.SECURITY]),
        (
            {
                "default": {"min_security": 2},
                "link_security": [{"mobile_router": MR, "bid": 1, "level": 4}],
            },
            {},
            {},
            [],
        ),
        ({"security_levels": {"wlan": 0}, "default": {"min_security": 1}}, {}, {}, [Rule.SECURITY]),
        ({}, {"min_bandwidth_bps": 20e6}, {}, [Rule.MIN_BANDWIDTH]),
        ({}, {"max_delay_ms": 10}, {}, [Rule.MAX_DELAY]),
        ({}, {"max_delay_ms": 10}, {"rtt_ms": None}, [Rule.MAX_DELAY]),
        ({}, {"max_jitter_ms": 1}, {}, [Rule.MAX_JITTER]),
        ({}, {"max_loss": 0.01}, {"loss": 0.02}, [Rule.MAX_LOSS]),
        (
            {"default": {"technologies": ["lte"], "max_cost_per_mb": 0}},
            {"max_loss": 0.01},
            {"loss": 0.5, "cost_per_mb": 1},
            [Rule.TECHNOLOGY, Rule.COST_CAP, Rule.MAX_LOSS],
        ),
    ],
    ids=[
        "none",
        "excluded",
        "excluded-elsewhere",
        "excluded-for-class",
        "technology",
        "default-technology",
        "cost-cap",
        "unknown-cost",
        "security",
        "link-security-override",
        "technology-security-level",
        "bandwidth",
        "delay",
        "unknown-delay",
        "jitter",
        "loss",
        "every-rule-reported",
    ],
)
def test_eligibility_rules(
    rules: dict[str, Any],
    requirements: dict[str, Any],
    values: dict[str, Any],
    expected: list[Rule],
) -> None:
    p = profile(requirements=requirements)
    cfg = config(p, rules=OperatorRules.model_validate(rules).model_dump())
    view = view_of({1: values})
    assert [v.rule for v in violations(view, 1, p, cfg, 0.0)] == expected


def test_down_unbound_and_stale_links() -> None:
    p = profile()
    cfg = config(p, settings={"max_metrics_age_s": 30})
    view = view_of({1: {}})
    view, _ = apply_link_state(view, link_state(1, False), 1.0)
    view, _ = apply_binding_event(view, binding(1, K.EXPIRED), 1.0)
    found = violations(view, 1, p, cfg, 31.0)
    assert [v.rule for v in found] == [Rule.LINK_DOWN, Rule.STALE_METRICS, Rule.NO_BINDING]
    assert found[2].detail == "binding gone (expired)"


def test_stale_metrics_wake_the_nsa() -> None:
    cfg = config(profile(), settings={"max_metrics_age_s": 30})
    decision = decide(
        view_of({1: {}}, now=5.0),
        cfg,
        MrState(mobile_router=MR),
        6.0,
        Trigger(kind=TriggerKind.START),
    )
    assert decision.wake_at == pytest.approx(35.0, abs=1e-4)  # plus WAKE_SLACK_S
