"""The HA's own binding events, derived purely from (old entry, new entry / decision, now)."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from services.contracts.messages import BindingEvent, BindingEventKind
from services.contracts.topics import DEFAULT_ROOT
from services.mcoa.agent import load, load_broker
from services.mcoa.cache import Binding, BindingKey, Decision, decide, make_ack
from services.mcoa.config import default_mr_id
from services.mcoa.events import decision_events, entry_events, expired_events
from services.mcoa.registration import build_bu
from services.mobility_header.codec import BindingUpdate
from services.mobility_header.status import BaStatus, ba_status_name
from tests.mcoa.factories import COA1, COA2, HOME, MNP, bu, ha_settings, link, mr_settings

NOW = 1_700_000_000.0
IDS = {HOME: "mr1"}
R, F, C = BindingEventKind.REGISTERED, BindingEventKind.REFRESHED, BindingEventKind.COA_CHANGED
D, X, J = BindingEventKind.DEREGISTERED, BindingEventKind.EXPIRED, BindingEventKind.REJECTED
ACCEPTED = "Binding Update accepted"


def _binding(coa: IPv6Address = COA1, *, bid: int = 1, sequence: int = 1) -> Binding:
    return Binding(HOME, bid, coa, (MNP,), 10, sequence, 60, 160.0)


def _summary(events: list[BindingEvent]) -> list[tuple[Any, ...]]:
    return [
        (e.event, e.bid, e.care_of_address, e.previous_care_of_address, e.lifetime_s, e.status)
        for e in events
    ]


A, B = str(COA1), str(COA2)


@pytest.mark.parametrize(
    ("old", "new", "want"),
    [
        (None, None, []),
        (None, _binding(), [(R, 1, A, None, 60, 0)]),
        (_binding(), _binding(sequence=2), [(F, 1, A, None, 60, 0)]),
        (_binding(), _binding(COA2, sequence=2), [(C, 1, B, A, 60, 0)]),
        (_binding(COA2, bid=2), None, [(D, 2, B, None, 0, 0)]),
        (_binding(), _binding(), []),
    ],
    ids=["nothing", "registered", "refreshed", "coa-changed", "deregistered", "unchanged"],
)
def test_entry_events(
    old: Binding | None, new: Binding | None, want: list[tuple[Any, ...]]
) -> None:
    events = entry_events("ha1", "mr1", old, new, now=NOW)
    assert _summary(events) == want
    for event in events:
        assert (event.sender, event.mobile_router, event.timestamp) == ("ha1", "mr1", NOW)
        assert event.status_name == ACCEPTED


def _step(
    cache: dict[BindingKey, Binding], message: BindingUpdate, source: IPv6Address = COA1
) -> tuple[dict[BindingKey, Binding], list[tuple[Any, ...]]]:
    decision = decide(ha_settings(), cache, message, source, 100.0)
    events = decision_events("ha1", IDS, cache, decision, bu=message, source=source, now=NOW)
    assert all(e.sender == "ha1" and e.mobile_router == "mr1" for e in events)
    return decision.cache, _summary(events)


def _dereg_all(sequence: int) -> BindingUpdate:
    message = bu(sequence, lifetime=0)
    return replace(
        message, options=tuple(o for o in message.options if o not in message.binding_ids)
    )


_UNAUTHORIZED = build_bu(mr_settings(prefixes=["2001:db8:ee::/64"]), link(1), COA1, 9, 60)
_UNKNOWN = build_bu(mr_settings(home_address="2001:db8:100::9"), link(1), COA1, 9, 60)


@pytest.mark.parametrize(
    ("steps", "want"),
    [
        ([bu(1)], [(R, 1, A, None, 60, 0)]),
        ([bu(1), bu(2)], [(F, 1, A, None, 60, 0)]),
        ([bu(1), bu(2, coa=COA2)], [(C, 1, B, A, 60, 0)]),
        ([bu(1, bid=2, coa=COA2)], [(R, 2, B, None, 60, 0)]),
        ([bu(1), bu(2, lifetime=0)], [(D, 1, A, None, 0, 0)]),
        ([bu(1, lifetime=0)], []),
        (
            [bu(1), bu(2, bid=2, coa=COA2), _dereg_all(3)],
            [(D, 1, A, None, 0, 0), (D, 2, B, None, 0, 0)],
        ),
        ([bu(5), bu(5, coa=COA2)], [(J, 1, B, A, 60, BaStatus.SEQUENCE_NUMBER_OUT_OF_WINDOW)]),
        ([_UNAUTHORIZED], [(J, 1, A, None, 60, BaStatus.NOT_AUTHORIZED_FOR_PREFIX)]),
        ([_UNKNOWN], []),
    ],
    ids=[
        "registered",
        "refreshed",
        "coa-changed",
        "second-bid",
        "deregistered",
        "deregistering-nothing",
        "deregister-all",
        "rejected-sequence",
        "rejected-prefix",
        "unknown-router",
    ],
)
def test_decision_events(steps: list[BindingUpdate], want: list[tuple[Any, ...]]) -> None:
    cache: dict[BindingKey, Binding] = {}
    events: list[tuple[Any, ...]] = []
    for message in steps:
        source = message.binding_ids[0].care_of if message.binding_ids else None
        cache, events = _step(cache, message, source if isinstance(source, IPv6Address) else COA1)
    assert events == want


def test_rejected_names_the_status() -> None:
    cache, _ = _step({}, bu(1))
    message = bu(2, coa=COA2)
    failed = BaStatus.FORWARDING_SETUP_FAILED
    decision = Decision(failed, make_ack(message, failed, 0, 1), dict(cache), HOME)
    (event,) = decision_events("ha1", IDS, cache, decision, bu=message, source=COA2, now=NOW)
    assert event.event is J
    assert (event.status, event.status_name) == (143, ba_status_name(143))
    assert (event.care_of_address, event.previous_care_of_address) == (B, A)


def test_expired_events_in_order_and_only_for_known_routers() -> None:
    stranger = Binding(IPv6Address("2001:db8:100::9"), 1, COA1, (MNP,), 0, 1, 60, 160.0)
    gone = [_binding(COA2, bid=2), stranger, _binding()]
    events = expired_events("ha1", IDS, gone, NOW)
    assert [(e.event, e.bid, e.care_of_address, e.lifetime_s) for e in events] == [
        (X, 1, A, 60),
        (X, 2, B, 60),
    ]
    assert all(e.status is None and e.timestamp == NOW for e in events)


def test_mobile_router_id_defaults_from_the_home_address() -> None:
    assert ha_settings().mobile_routers[0].id == "mr-2001-db8-100--2"
    assert default_mr_id(HOME) == "mr-2001-db8-100--2"
    named = ha_settings(
        mobile_routers=[{"id": "mr1", "home_address": str(HOME), "prefixes": [str(MNP)]}]
    )
    assert named.mr_ids() == {HOME: "mr1"}
    assert not named.publish_events


def test_mobile_router_ids_are_distinct_and_valid() -> None:
    entry = {"id": "mr1", "prefixes": [str(MNP)]}
    with pytest.raises(ValidationError, match="id is listed twice"):
        ha_settings(
            mobile_routers=[
                {**entry, "home_address": str(HOME)},
                {**entry, "home_address": "2001:db8:100::3"},
            ]
        )
    with pytest.raises(ValidationError, match="pattern"):
        ha_settings(mobile_routers=[{**entry, "id": "mr/1", "home_address": str(HOME)}])


def test_example_file_still_loads_and_broker_table_is_optional(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "mcoa-ha.toml"
    settings = load(example, "ha")
    assert settings.ha is not None
    assert not settings.ha.publish_events
    assert load_broker(example).topic_root == DEFAULT_ROOT
    path = tmp_path / "ha.toml"
    path.write_text(
        example.read_text().replace("[mcoa.ha]\n", "[mcoa.ha]\npublish_events = true\n")
        + 'id = "mr1"\n[broker]\ntopic_root = "x/v1"\nport = 1884\n'
    )
    settings = load(path, "ha")
    assert settings.ha is not None
    assert settings.ha.publish_events
    assert settings.ha.mr_ids() == {HOME: "mr1"}
    broker = load_broker(path)
    assert (broker.topic_root, broker.port) == ("x/v1", 1884)


def test_every_event_names_the_pipe_kind_of_its_binding() -> None:
    vxlan = replace(_binding(), pipe_kind="vxlan")
    (registered,) = entry_events("ha1", "mr1", None, vxlan, now=NOW)
    (moved,) = entry_events("ha1", "mr1", vxlan, replace(vxlan, care_of=COA2), now=NOW)
    (gone,) = entry_events("ha1", "mr1", vxlan, None, now=NOW)
    (expired,) = expired_events("ha1", IDS, [vxlan], NOW)
    assert [e.pipe for e in (registered, moved, gone, expired)] == ["vxlan"] * 4
    # The default kind of a cache entry (a plain NEMO router's BU) is named too.
    (legacy,) = entry_events("ha1", "mr1", None, _binding(), now=NOW)
    assert legacy.pipe == "ip6tnl"
    assert b'"pipe":"ip6tnl"' in legacy.model_dump_json().encode()


@pytest.mark.parametrize(
    ("option", "want"),
    [(None, "ip6tnl"), ("seg6", "seg6"), ("VX LAN\n", None)],
    ids=["no-option: legacy", "asked", "garbled: unknown"],
)
def test_a_rejected_event_names_the_kind_the_bu_asked_for(
    option: str | None, want: str | None
) -> None:
    from services.mobility_header.mh_options import VendorSpecific
    from services.mobility_header.pipe_option import SUB_TYPE_KIND, VENDOR_ID

    message = bu(1)
    if option is not None:
        vsm = VendorSpecific(VENDOR_ID, SUB_TYPE_KIND, option.encode())
        message = replace(message, options=(*message.options, vsm))
    failed = BaStatus.FORWARDING_SETUP_FAILED
    decision = Decision(failed, make_ack(message, failed, 0, 1), {}, HOME)
    (event,) = decision_events("ha1", IDS, {}, decision, bu=message, source=COA1, now=NOW)
    assert event.pipe == want
