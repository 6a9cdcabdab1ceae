"""Plans: pure diffs, versions per node, one message in flight, resynchronisation, schemes."""

from __future__ import annotations

import pytest

from services.contracts import policy_xml
from services.contracts.errors import InvalidInput
from services.contracts.messages import PolicyStatus, Presence
from services.contracts.policy import (
    Direction,
    Forward,
    Install,
    Policy,
    PolicyMessage,
    PortRange,
    Update,
)
from services.nsa.core import (
    ClassState,
    MrState,
    acknowledge,
    desired_policies,
    diff,
    greet,
    lost,
    new_ledgers,
    plan,
    resync,
)
from services.prem.core.policyset import DesiredState
from tests.nsa.factories import HA_NODE, MR, MR_NODE, Sim, config, profile, udp


def pol(pid: str, bid: int, port: int = 5001, priority: int = 10) -> Policy:
    return Policy(id=pid, priority=priority, selector=udp(port), action=Forward(bid=bid))


A1, A2, B1, C1 = pol("a.0", 1), pol("a.0", 2), pol("b.0", 1, 6000, 5), pol("c.0", 1, 7000, 20)


@pytest.mark.parametrize(
    ("current", "desired", "insert", "delete", "replace"),
    [
        ((), (A1, B1), ["b.0", "a.0"], [], []),
        ((A1, B1), (), [], ["a.0", "b.0"], []),
        ((A1, B1), (A2, B1), [], [], ["a.0"]),
        ((A1, B1), (B1, C1), ["c.0"], ["a.0"], []),
        ((A1, C1), (A2, B1), ["b.0"], ["c.0"], ["a.0"]),
    ],
    ids=["insert-in-precedence-order", "delete", "replace", "insert-and-delete", "all-three"],
)
def test_diff(
    current: tuple[Policy, ...],
    desired: tuple[Policy, ...],
    insert: list[str],
    delete: list[str],
    replace: list[str],
) -> None:
    update = diff(current, desired)
    assert update is not None
    assert [p.id for p in update.insert] == insert
    assert list(update.delete) == delete
    assert [p.id for p in update.replace] == replace


def test_diff_of_equal_sets_is_nothing() -> None:
    assert diff((A1, B1), (B1, A1)) is None


def assigned(*flows: tuple[str, tuple[int, ...]]) -> MrState:
    return MrState(
        mobile_router=MR,
        classes={name: ClassState(flows=f, fallbacks=(1, 2)) for name, f in flows},
    )


CFG = config(profile("video", ports=(5001, 5002), priority=100), profile("voip", ports=(5060,)))


def test_desired_sets_mirror_the_downlink() -> None:
    state = assigned(("video", (1, 2)), ("voip", (2,)))
    up = desired_policies(CFG, state, Direction.UPLINK)
    down = desired_policies(CFG, state, Direction.DOWNLINK)
    assert [(p.id, p.priority) for p in up] == [
        ("video.0", 100),
        ("video.1", 101),
        ("voip.0", 1000),
    ]
    assert up[0].selector.dst_port == PortRange(first=5001, last=5001)
    assert down[0].selector.src_port == PortRange(first=5001, last=5001)
    assert down[0].selector.dst_port is None
    assert [p.action for p in up] == [
        Forward(bid=1, fallbacks=(2,)),
        Forward(bid=2, fallbacks=(1,)),
        Forward(bid=2, fallbacks=(1,)),
    ]


def test_a_policy_made_once_serves_later_plans_until_its_inputs_change() -> None:
    state = assigned(("video", (1, 2)), ("voip", (2,)))
    first = desired_policies(CFG, state, Direction.UPLINK)
    again = desired_policies(CFG, state, Direction.UPLINK)
    assert all(a is b for a, b in zip(first, again, strict=True)), "the same frozen policies"
    moved = desired_policies(CFG, assigned(("video", (2, 2)), ("voip", (2,))), Direction.UPLINK)
    assert moved[0].action == Forward(bid=2, fallbacks=(1,))
    assert moved[1] is first[1]
    assert moved[2] is first[2]
    # A reloaded configuration: the same class names and priorities, other selectors (new
    # objects). Its policies carry the new selectors, never a cached one of the old objects.
    reloaded = config(
        profile("video", ports=(6001, 6002), priority=100), profile("voip", ports=(5060,))
    )
    fresh = desired_policies(reloaded, state, Direction.UPLINK)
    assert [p.selector.dst_port for p in fresh[:2]] == [
        PortRange(first=6001, last=6001),
        PortRange(first=6002, last=6002),
    ]
    assert fresh[0] == Policy(
        id="video.0",
        priority=100,
        selector=reloaded.profiles[0].selectors[0],
        action=Forward(bid=1, fallbacks=(2,)),
    )


def test_withdrawn_class_has_no_policies() -> None:
    state = assigned(("video", ()), ("voip", (2,)))
    assert [p.id for p in desired_policies(CFG, state, Direction.UPLINK)] == ["voip.0"]


def test_first_plan_installs_then_updates_with_growing_versions() -> None:
    ledgers = new_ledgers(MR, ha_node=HA_NODE, mr_node=MR_NODE)
    ledgers, first = plan(ledgers, CFG, assigned(("video", (1, 1))))
    assert [(m.node, m.version, m.operation.kind) for m in first] == [
        (HA_NODE, 1, "install"),
        (MR_NODE, 1, "install"),
    ]
    for message in first:
        ledgers = acknowledge(ledgers, applied(message))
    ledgers, second = plan(ledgers, CFG, assigned(("video", (2, 1)), ("voip", (1,))))
    assert [(m.node, m.version) for m in second] == [(HA_NODE, 2), (MR_NODE, 2)]
    update = second[0].operation
    assert isinstance(update, Update)
    assert [p.id for p in update.replace] == ["video.0"]
    assert [p.id for p in update.insert] == ["voip.0"]
    for message in second:
        ledgers = acknowledge(ledgers, applied(message))
    ledgers, third = plan(ledgers, CFG, assigned(("video", (2, 1)), ("voip", (1,))))
    assert third == ()


def test_one_message_in_flight_per_node() -> None:
    ledgers = new_ledgers(MR, ha_node=HA_NODE, mr_node=MR_NODE)
    ledgers, first = plan(ledgers, CFG, assigned(("video", (1, 1))))
    ledgers, waiting = plan(ledgers, CFG, assigned(("video", (2, 2))))
    assert waiting == ()
    ledgers = acknowledge(ledgers, applied(first[0]))  # only the HA answered
    ledgers, then = plan(ledgers, CFG, assigned(("video", (2, 2))))
    assert [(m.node, m.version, m.operation.kind) for m in then] == [(HA_NODE, 2, "update")]


def settled(state: MrState) -> tuple[Sim, MrState]:
    sim = Sim(CFG)
    sim.ledgers, messages = plan(sim.ledgers, CFG, state)
    for message in messages:
        sim.deliver(message)
    return sim, state


def test_a_presence_announcing_the_known_version_changes_nothing() -> None:
    sim, state = settled(assigned(("video", (1, 1))))
    # Workers re-announce their version after every document they apply, and a worker that
    # restarts with its state intact announces what it acknowledged: no resync for either.
    same = Presence(sender=MR_NODE, node=MR_NODE, service="prem", online=True, version=1)
    sim.ledgers = greet(sim.ledgers, same)
    sim.ledgers, messages = plan(sim.ledgers, CFG, state)
    assert messages == ()


def test_a_presence_for_the_acknowledged_version_arriving_after_the_next_message_left() -> None:
    sim, _state = settled(assigned(("video", (1, 1))))
    # Version 1 is acknowledged; the NSA sends version 2; then the presence the worker
    # published after applying version 1 arrives. It is stale, not a hello.
    sim.ledgers, messages = plan(sim.ledgers, CFG, assigned(("video", (2, 2))))
    assert (MR_NODE, 2) in [(m.node, m.version) for m in messages]
    stale = Presence(sender=MR_NODE, node=MR_NODE, service="prem", online=True, version=1)
    after = greet(sim.ledgers, stale)
    assert after == sim.ledgers
    assert after.mr is not None
    assert not after.mr.needs_resync


def test_hello_after_restart_resynchronises_with_a_full_install() -> None:
    sim, state = settled(assigned(("video", (1, 1))))
    # The worker restarted without its state: it announces version 0.
    hello = Presence(sender=MR_NODE, node=MR_NODE, service="prem", online=True, version=0)
    sim.ledgers = greet(sim.ledgers, hello)
    sim.ledgers, messages = plan(sim.ledgers, CFG, state)
    assert [(m.node, m.version, m.operation.kind) for m in messages] == [(MR_NODE, 2, "install")]
    install = messages[0].operation
    assert isinstance(install, Install)
    assert [p.id for p in install.policies] == ["video.0", "video.1"]


def test_resync_goes_above_the_reported_version() -> None:
    sim, state = settled(assigned(("video", (1, 1))))
    sim.ledgers, message = resync(sim.ledgers, HA_NODE, CFG, state, reported_version=41)
    assert (message.node, message.version, message.operation.kind) == (HA_NODE, 42, "install")
    sim.ha.state = DesiredState(node=HA_NODE, version=41)  # what the restarted worker holds
    sim.deliver(message)
    assert sim.ledgers.ha.version == 42
    assert not sim.ledgers.ha.needs_resync


def test_refused_message_leads_to_install() -> None:
    sim, _ = settled(assigned(("video", (1, 1))))
    sim.ledgers, messages = plan(sim.ledgers, CFG, assigned(("video", (2, 2))))
    refused = applied(messages[0]).model_copy(update={"result": "refused", "version": 1})
    sim.ledgers = acknowledge(sim.ledgers, refused)
    sim.ledgers, again = plan(sim.ledgers, CFG, assigned(("video", (2, 2))))
    assert [(m.node, m.version, m.operation.kind) for m in again] == [(HA_NODE, 3, "install")]


def test_lost_acknowledgement_leads_to_install() -> None:
    ledgers = new_ledgers(MR, ha_node=HA_NODE, mr_node=MR_NODE)
    state = assigned(("video", (1, 1)))
    ledgers, _ = plan(ledgers, CFG, state)
    ledgers = lost(ledgers, MR_NODE)
    ledgers, again = plan(ledgers, CFG, state)
    assert [(m.node, m.version, m.operation.kind) for m in again] == [(MR_NODE, 2, "install")]


def test_unexpected_version_in_a_status_leads_to_install() -> None:
    sim, state = settled(assigned(("video", (1, 1))))
    odd = PolicyStatus(
        sender=HA_NODE,
        node=HA_NODE,
        mobile_router=MR,
        direction=Direction.DOWNLINK,
        result="fallback",
        version=7,
    )
    sim.ledgers = acknowledge(sim.ledgers, odd)
    sim.ledgers, messages = plan(sim.ledgers, CFG, state)
    assert [(m.node, m.version, m.operation.kind) for m in messages] == [(HA_NODE, 8, "install")]


def test_status_of_a_superseded_message_is_ignored() -> None:
    ledgers = new_ledgers(MR, ha_node=HA_NODE, mr_node=MR_NODE)
    state = assigned(("video", (1, 1)))
    ledgers, first = plan(ledgers, CFG, state)
    ledgers, install = resync(ledgers, HA_NODE, CFG, state)
    late = applied(first[0]).model_copy(update={"result": "refused"})
    ledgers = acknowledge(ledgers, late)
    assert ledgers.ha.in_flight == install
    ledgers = acknowledge(ledgers, applied(install))
    assert ledgers.ha.version == install.version == 2


def test_scheme_1_sends_downlink_to_ha_and_uplink_to_mr() -> None:
    sim = Sim(config(profile()))
    sim.start(0.0, {1: {}})
    to_ha, to_mr = sim.sent
    assert (to_ha.node, to_ha.direction, to_ha.symmetric) == (HA_NODE, Direction.DOWNLINK, False)
    assert (to_mr.node, to_mr.direction, to_mr.symmetric) == (MR_NODE, Direction.UPLINK, False)
    assert sim.enforced(5001) == (1, 1)


def test_scheme_2_sends_one_symmetric_downlink_document() -> None:
    sim = Sim(config(profile(), settings={"scheme": 2, "dwell_s": 0}), scheme=2)
    sim.start(0.0, {1: {}, 2: {}})
    assert sim.bid() == 2  # LTE: more secure than the WLAN, all else equal
    sim.link(1.0, 2, up=False)
    assert [(m.node, m.version, m.symmetric) for m in sim.sent] == [
        (HA_NODE, 1, True),
        (HA_NODE, 2, True),
    ]
    assert sim.ledgers.mr is None
    assert sim.enforced(5001) == (1, 1)  # the MR got the mirrored set from the HA
    assert sim.mr.state.version == 2


def test_scheme_2_mr_hello_resynchronises_through_the_ha() -> None:
    sim = Sim(config(profile(), settings={"scheme": 2}), scheme=2)
    sim.start(0.0, {1: {}})
    hello = Presence(sender=MR_NODE, node=MR_NODE, service="prem", online=True, version=5)
    sim.ledgers = greet(sim.ledgers, hello)
    sim.ledgers, messages = plan(sim.ledgers, sim.config, sim.state)
    assert [(m.node, m.version, m.operation.kind) for m in messages] == [(HA_NODE, 6, "install")]


def test_messages_survive_the_xml_document() -> None:
    sim = Sim(config(profile(ports=(5001, 5002)), settings={"dwell_s": 0}))
    sim.start(0.0, {1: {}, 2: {"rtt_ms": 90}})
    sim.link(1.0, 1, up=False)
    for message in sim.sent:
        assert policy_xml.parse(policy_xml.render(message)) == message


def test_status_from_an_unknown_node_is_refused() -> None:
    ledgers = new_ledgers(MR, ha_node=HA_NODE, mr_node=MR_NODE)
    stray = PolicyStatus(
        sender="x",
        node="x",
        mobile_router=MR,
        direction=Direction.UPLINK,
        result="applied",
        version=1,
    )
    with pytest.raises(InvalidInput, match="serves no policy set") as caught:
        acknowledge(ledgers, stray)
    assert caught.value.problems[0].field == "node"


def applied(message: PolicyMessage) -> PolicyStatus:
    return PolicyStatus(
        sender=message.node,
        node=message.node,
        mobile_router=message.mobile_router,
        direction=message.direction,
        result="applied",
        version=message.version,
        requested_version=message.version,
    )
