"""Any sequence of well-typed messages, in any order, from any names: the picture never raises,
and every container stays within its bound."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.console.core import ConsoleState, Limits
from services.contracts.messages import BindingEventKind, FallbackState, NodeMetrics
from services.contracts.policy import Direction, Flush, Install, Update
from services.contracts.topics import TopicKind, TopicName
from tests.console import messages as m
from tests.console.snapshot import snapshot

NAMES = st.sampled_from(["mr1", "mr2", "mr3", "ha1", "nsa-1", "x"])
IFACES = st.sampled_from(["wlan0", "lte0", "eth0", "nr0"])
BIDS = st.integers(min_value=1, max_value=6)
CLASSES = st.sampled_from(["video", "voice", "bulk"])
FLOWS = st.lists(BIDS, min_size=0, max_size=3).map(tuple)
POLICIES = st.lists(
    st.builds(m.policy, st.builds(lambda c, i: f"{c}.{i}", CLASSES, st.integers(0, 2)), BIDS),
    max_size=4,
    unique_by=lambda p: p.id,
).map(tuple)
OPERATIONS = st.one_of(
    st.builds(lambda p: Install(policies=p), POLICIES),
    st.builds(lambda p: Update(insert=p), POLICIES),
    st.builds(lambda p: Update(replace=p), POLICIES),
    st.just(Flush()),
)
DIRECTIONS = st.sampled_from(list(Direction))
FALLBACKS = st.lists(
    st.builds(
        lambda c, a: FallbackState(policy_id=f"{c}.0", primary_bid=1, active_bid=a),
        CLASSES,
        st.none() | BIDS,
    ),
    max_size=2,
    unique_by=lambda f: f.policy_id,
).map(tuple)

#: (interface, BID, RTT, budget (cap, used) or None) of the links of one node's report.
LINKS = st.lists(
    st.tuples(
        IFACES, BIDS, st.floats(0, 1000), st.none() | st.tuples(st.just(1000), st.integers(0, 1000))
    ),
    min_size=1,
    max_size=4,
    unique_by=lambda link: link[0],
)


def _batch(node: str, links: list[tuple[str, int, float, tuple[int, int] | None]]) -> Any:
    return m.node_metrics(
        node, *(m.metrics(node, i, bid, rtt, budget) for i, bid, rtt, budget in links)
    )


MESSAGES: st.SearchStrategy[tuple[Any, Any]] = st.one_of(
    st.builds(m.metrics, NAMES, IFACES, BIDS, st.floats(0, 1000)),
    st.builds(_batch, NAMES, LINKS),
    st.builds(m.state, NAMES, IFACES, BIDS, st.booleans()),
    st.builds(
        m.binding,
        NAMES,
        BIDS,
        st.sampled_from(list(BindingEventKind)),
        st.none() | st.just("2001:db8::9"),
    ),
    st.builds(m.decision, NAMES, st.dictionaries(CLASSES, FLOWS, max_size=3), st.floats(0, 1e6)),
    st.builds(m.document, NAMES, NAMES, st.integers(1, 12), OPERATIONS, DIRECTIONS),
    st.builds(
        m.status,
        NAMES,
        NAMES,
        st.integers(0, 12),
        st.sampled_from(["applied", "refused", "fallback"]),
        DIRECTIONS,
        FALLBACKS,
        st.none() | st.integers(1, 12),
    ),
    st.builds(
        m.presence,
        NAMES,
        st.sampled_from(["prem", "monitor", "nsa", "mobility-events"]),
        st.booleans(),
    ),
    st.builds(m.dead_letter, NAMES, st.sampled_from(["prem", "nsa"])),
)
#: A topic whose names are not the message's (the picture must refuse or bear it).
SKEWED = st.tuples(MESSAGES, NAMES).map(lambda t: (t[0][0]._replace(owner=t[1]), t[0][1]))

SMALL = Limits(
    routers=2,
    nodes=3,
    links=2,
    bindings=2,
    classes=2,
    history=4,
    decisions=2,
    alerts=2,
    services=2,
    log=5,
    dead_letter_hold_s=5.0,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.one_of(MESSAGES, SKEWED), st.floats(0, 30)), max_size=60))
def test_any_sequence_never_raises_and_stays_bounded(
    steps: list[tuple[tuple[Any, Any], float]],
) -> None:
    state = ConsoleState(SMALL)
    now = 0.0
    revision = 0
    for (topic, message), dt in steps:
        now += dt
        state.feed(topic, message, now)
        state.tick(now)
        for what, size, bound in state.footprint():
            assert size <= bound, what
        revision, _ = state.rows_since(revision)
        state.alerts_since(0)
        state.other_nodes()
        for name in state.routers:
            state.router_view(name)
    # The incremental totals agree with the rows recomputed from scratch.
    rows = [r.row for r in state.routers.values()]
    assert state.totals["routers"] == len(rows)
    assert state.totals["links"] == sum(r["links"] for r in rows)
    assert state.totals["links_up"] == sum(r["links_up"] for r in rows)
    assert state.totals["mismatches"] == sum(r["mismatches"] for r in rows)
    assert state.totals["with_alerts"] == sum(1 for r in rows if r["alerts"])
    for router in state.routers.values():
        assert router.row == state._row(router)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.one_of(MESSAGES, SKEWED), st.floats(0, 30)), max_size=40))
def test_a_node_metrics_leaves_the_picture_its_entries_on_their_own_topics_would(
    steps: list[tuple[tuple[Any, Any], float]],
) -> None:
    """Whatever came before and whatever the bounds refuse: a monitor's choice of
    `batch_metrics` never shows in the picture, and a batch is taken when all its entries are."""
    per_link, batched = ConsoleState(SMALL), ConsoleState(SMALL)
    now = 0.0
    for (topic, message), dt in steps:
        now += dt
        if isinstance(message, NodeMetrics):
            taken = [
                per_link.feed(
                    TopicName(TopicKind.LINK_METRICS, topic.owner, entry.interface), entry, now
                )
                for entry in message.links
            ]
            assert batched.feed(topic, message, now) == all(taken)
        else:
            assert batched.feed(topic, message, now) == per_link.feed(topic, message, now)
        per_link.tick(now)
        batched.tick(now)
        assert snapshot(batched) == snapshot(per_link)
