"""The console's pure picture: what each message does to it, alerts, chosen vs enforced."""

from __future__ import annotations

from services.console.core import ConsoleState, Limits
from services.contracts.messages import BindingEventKind, FallbackState
from services.contracts.policy import Direction, Install, Update
from services.contracts.topics import TopicKind, TopicName
from tests.console import messages as m
from tests.console.snapshot import snapshot


def feed(state: ConsoleState, item: tuple[object, object], now: float = 100.0) -> bool:
    topic, message = item
    return state.feed(topic, message, now)  # type: ignore[arg-type]


def test_link_metrics_and_state_make_a_router_with_a_link_and_history() -> None:
    state = ConsoleState()
    for t in range(5):
        assert feed(state, m.metrics("mr1", "wlan0", 1, rtt_ms=10.0 + t), now=100.0 + t)
    assert feed(state, m.state("mr1", "wlan0", 1, up=True))
    view = state.router_view("mr1")
    assert view is not None
    (link,) = view["links"]
    assert link["interface"] == "wlan0"
    assert link["bid"] == 1
    assert link["up"] is True
    assert link["latest"]["rtt_ms"] == 14.0
    assert link["history"]["rtt_ms"] == [10.0, 11.0, 12.0, 13.0, 14.0]
    newer = state.router_view("mr1", after=102.0)
    assert newer is not None
    assert newer["links"][0]["history"]["t"] == [103.0, 104.0]
    _, rows = state.rows_since(0)
    assert rows == [
        {
            "mr": "mr1",
            "ha": None,
            "ha_offline": [],
            "services": {},
            "links": 1,
            "links_up": 1,
            "bindings": 0,
            "alerts": 0,
            "alert_kinds": [],
            "mismatches": 0,
        }
    ]


def test_a_node_metrics_is_taken_as_its_entries_on_their_own_link_topics() -> None:
    """A monitor with `batch_metrics` sends one message per period for all its links: the
    picture is the one the same reports on their own links' topics make, to the revision."""
    per_link, batched = ConsoleState(), ConsoleState()
    for state in (per_link, batched):  # one link known before its metrics, one new
        feed(state, m.state("mr1", "wlan0", 1, up=True))
    for t in range(3):
        wlan = m.metrics("mr1", "wlan0", 1, rtt_ms=10.0 + t, pps=(100.0 + t, 50.0))
        lte = m.metrics("mr1", "lte0", 2, rtt_ms=40.0 + t, budget=(10**6, 300_000 * (t + 1)))
        now = 101.0 + t
        assert feed(per_link, wlan, now)
        assert feed(per_link, lte, now)
        assert feed(batched, m.node_metrics("mr1", wlan, lte), now)
    assert snapshot(batched) == snapshot(per_link)
    view = batched.router_view("mr1")
    assert view is not None
    lte0, wlan0 = view["links"]
    assert (lte0["interface"], lte0["bid"], wlan0["interface"], wlan0["bid"]) == (
        "lte0",
        2,
        "wlan0",
        1,
    )
    assert lte0["history"]["rtt_ms"] == [40.0, 41.0, 42.0]
    assert wlan0["history"]["rtt_ms"] == [10.0, 11.0, 12.0]
    assert wlan0["history"]["rx_pps"] == [100.0, 101.0, 102.0]
    assert wlan0["up"] is True
    # The third period's 900 kB of 1 MB raised the budget alert, as the lone report does.
    assert batched.routers["mr1"].row["alert_kinds"] == ["budget-near-cap"]
    assert batched.totals["links"] == 2
    assert batched.dropped == 0


def test_a_node_metrics_over_the_bound_of_links_takes_what_fits_as_its_entries_would() -> None:
    per_link, batched = ConsoleState(Limits(links=1)), ConsoleState(Limits(links=1))
    wlan, lte, nr = (m.metrics("mr1", i, b) for i, b in (("wlan0", 1), ("lte0", 2), ("nr0", 3)))
    assert [feed(per_link, entry) for entry in (wlan, lte, nr)] == [True, False, False]
    assert not feed(batched, m.node_metrics("mr1", wlan, lte, nr))  # not taken whole
    assert snapshot(batched) == snapshot(per_link)
    assert batched.dropped == 2  # each refused entry, as its own report would count
    assert [link.interface for link in batched.routers["mr1"].links.values()] == ["wlan0"]


def test_link_metrics_and_node_metrics_are_taken_only_on_their_own_kind_of_topic() -> None:
    state = ConsoleState()
    _, report = m.metrics("mr1", "wlan0", 1)
    _, batch = m.node_metrics("mr1", m.metrics("mr1", "wlan0", 1))
    assert not state.feed(TopicName(TopicKind.NODE_METRICS, "mr1"), report, 1.0)
    assert not state.feed(TopicName(TopicKind.LINK_METRICS, "mr1", "wlan0"), batch, 1.0)
    assert state.dropped == 2
    assert not state.routers


def test_history_is_a_bounded_ring() -> None:
    state = ConsoleState(Limits(history=10))
    for t in range(25):
        feed(state, m.metrics("mr1", "wlan0", 1, rtt_ms=float(t)), now=float(t))
    link = state.router_view("mr1")["links"][0]  # type: ignore[index]
    assert link["history"]["rtt_ms"] == [float(t) for t in range(15, 25)]


def test_a_link_down_raises_an_alert_and_up_clears_it() -> None:
    state = ConsoleState()
    feed(state, m.state("mr1", "lte0", 2, up=True))
    revision, _ = state.rows_since(0)
    feed(state, m.state("mr1", "lte0", 2, up=False), now=101.0)
    revision2, rows = state.rows_since(revision)
    assert [r["alert_kinds"] for r in rows] == [["link-down"]]
    assert state.totals["with_alerts"] == 1
    _, log = state.alerts_since(0)
    assert [(a["event"], a["kind"], a["subject"]) for a in log] == [("raised", "link-down", "lte0")]
    feed(state, m.state("mr1", "lte0", 2, up=True), now=102.0)
    _, rows = state.rows_since(revision2)
    assert rows[0]["alerts"] == 0
    assert state.totals["with_alerts"] == 0


def test_metrics_do_not_touch_the_fleet_row() -> None:
    state = ConsoleState()
    feed(state, m.metrics("mr1", "wlan0", 1))
    revision, _ = state.rows_since(0)
    for t in range(10):
        feed(state, m.metrics("mr1", "wlan0", 1, rtt_ms=float(t)), now=200.0 + t)
    assert state.rows_since(revision)[1] == []
    assert state.routers["mr1"].revision > revision  # the router's own view did change


def test_rows_since_hands_only_the_changed_rows() -> None:
    state = ConsoleState()
    for i in range(100):
        feed(state, m.state(f"mr{i:03d}", "wlan0", 1, up=True))
    revision, rows = state.rows_since(0)
    assert len(rows) == 100
    feed(state, m.state("mr042", "wlan0", 1, up=False))
    feed(state, m.state("mr007", "wlan0", 1, up=False))
    _, rows = state.rows_since(revision)
    assert [r["mr"] for r in rows] == ["mr042", "mr007"]
    assert state.totals == {
        "routers": 100,
        "with_alerts": 2,
        "mismatches": 0,
        "links": 100,
        "links_up": 98,
    }


def test_bindings_follow_their_events() -> None:
    state = ConsoleState()
    feed(state, m.binding("mr1", 1))
    feed(state, m.binding("mr1", 2, coa="2001:db8:2::1"))
    feed(state, m.binding("mr1", 2, BindingEventKind.REFRESHED, coa=None))
    feed(state, m.binding("mr1", 1, BindingEventKind.DEREGISTERED, coa=None))
    view = state.router_view("mr1")
    assert view is not None
    assert [
        (b["bid"], b["event"], b["active"], b["care_of_address"]) for b in view["bindings"]
    ] == [
        (1, "deregistered", False, "2001:db8::1"),
        (2, "refreshed", True, "2001:db8:2::1"),
    ]
    assert state.routers["mr1"].row["bindings"] == 1


def test_a_binding_shows_its_pipe_kind_once_an_event_named_it() -> None:
    state = ConsoleState()
    feed(state, m.binding("mr1", 1))  # an older producer: unknown
    feed(state, m.binding("mr1", 2, pipe="vxlan"))
    feed(state, m.binding("mr1", 2, BindingEventKind.REFRESHED, coa=None))  # says nothing
    view = state.router_view("mr1")
    assert view is not None
    assert [(b["bid"], b["pipe"]) for b in view["bindings"]] == [(1, None), (2, "vxlan")]
    # A binding that ended and registers again starts from what its new events say.
    feed(state, m.binding("mr1", 2, BindingEventKind.EXPIRED))
    feed(state, m.binding("mr1", 2))
    view = state.router_view("mr1")
    assert view is not None
    assert [(b["bid"], b["pipe"]) for b in view["bindings"]] == [(1, None), (2, None)]


def test_a_binding_event_on_another_routers_topic_is_dropped() -> None:
    state = ConsoleState()
    topic, message = m.binding("mr1", 1)
    assert not state.feed(topic._replace(owner="mr2"), message, 1.0)
    assert state.dropped == 1
    assert not state.routers


def test_chosen_against_enforced_per_class_and_mismatch() -> None:
    state = ConsoleState()
    feed(state, m.decision("mr1", {"video": (1,), "voice": (2,)}))
    feed(
        state,
        m.document(
            "ha1", "mr1", 1, Install(policies=(m.policy("video.0", 1), m.policy("voice.0", 1)))
        ),
    )
    feed(state, m.status("ha1", "mr1", 1))
    feed(
        state,
        m.document(
            "mr1",
            "mr1",
            1,
            Install(policies=(m.policy("video.0", 1), m.policy("voice.0", 2))),
            Direction.UPLINK,
        ),
    )
    feed(state, m.status("mr1", "mr1", 1, direction=Direction.UPLINK))
    view = state.router_view("mr1")
    assert view is not None
    assert view["ha"] == "ha1"
    assert view["classes"] == [
        {
            "class": "video",
            "chosen": [1],
            "ha": [1],
            "mr": [1],
            "mismatch": False,
            "override": None,
        },
        {"class": "voice", "chosen": [2], "ha": [1], "mr": [2], "mismatch": True, "override": None},
    ]
    assert state.totals["mismatches"] == 1
    # The HA's worker catches up with an Update: no mismatch left.
    feed(state, m.document("ha1", "mr1", 2, Update(replace=(m.policy("voice.0", 2),))))
    feed(state, m.status("ha1", "mr1", 2))
    assert state.routers["mr1"].row["mismatches"] == 0
    assert state.totals["mismatches"] == 0


def test_a_fallback_overrides_the_enforced_bid() -> None:
    state = ConsoleState()
    feed(state, m.decision("mr1", {"video": (1,)}))
    feed(state, m.document("ha1", "mr1", 1, Install(policies=(m.policy("video.0", 1),))))
    feed(state, m.status("ha1", "mr1", 1))
    fallback = FallbackState(policy_id="video.0", primary_bid=1, active_bid=2)
    feed(state, m.status("ha1", "mr1", 1, result="fallback", fallbacks=(fallback,)))
    (video,) = state.router_view("mr1")["classes"]  # type: ignore[index]
    assert video["ha"] == [2]
    assert video["mismatch"] is True


def test_an_applied_version_without_its_document_is_unknown() -> None:
    state = ConsoleState()
    feed(state, m.decision("mr1", {"video": (1,)}))
    feed(state, m.status("ha1", "mr1", 7))
    (video,) = state.router_view("mr1")["classes"]  # type: ignore[index]
    assert video["ha"] is None
    assert video["mismatch"] is False
    assert state.router_view("mr1")["enforcement"]["downlink"]["known"] is False  # type: ignore[index]


def test_a_refused_document_raises_an_alert_until_the_next_applied() -> None:
    state = ConsoleState()
    feed(state, m.status("ha1", "mr1", 0, result="refused", requested=3))
    (alert,) = state.router_view("mr1")["alerts"]  # type: ignore[index]
    assert alert["kind"] == "refused-document"
    assert "BID 9 is unknown here" in alert["detail"]
    feed(state, m.document("ha1", "mr1", 4, Install()))
    feed(state, m.status("ha1", "mr1", 4))
    assert state.router_view("mr1")["alerts"] == []  # type: ignore[index]


def test_presence_offline_alerts_on_the_router_and_the_has_routers() -> None:
    state = ConsoleState()
    feed(state, m.status("ha1", "mr1", 0, result="applied"))
    feed(state, m.presence("mr1", "prem", True))
    feed(state, m.presence("ha1", "prem", True))
    revision, _ = state.rows_since(0)
    feed(state, m.presence("ha1", "prem", False))
    _, rows = state.rows_since(revision)
    assert [(r["mr"], r["ha_offline"]) for r in rows] == [("mr1", ["prem"])]
    nodes = state.other_nodes()
    assert [(n["node"], n["services"], n["routers"]) for n in nodes] == [
        ("ha1", {"prem": False}, 1)
    ]
    assert nodes[0]["alerts"][0]["kind"] == "node-offline"
    feed(state, m.presence("mr1", "prem", False))
    assert state.routers["mr1"].row["alert_kinds"] == ["node-offline"]
    assert state.routers["mr1"].row["services"] == {"prem": False}


def test_a_dead_letter_alert_expires_after_the_hold_time() -> None:
    state = ConsoleState(Limits(dead_letter_hold_s=60))
    feed(state, m.state("mr1", "wlan0", 1, up=True))
    feed(state, m.dead_letter("mr1", "monitor"), now=100.0)
    assert state.routers["mr1"].row["alert_kinds"] == ["dead-letter"]
    state.tick(159.0)
    assert state.routers["mr1"].row["alerts"] == 1
    state.tick(160.0)
    assert state.routers["mr1"].row["alerts"] == 0
    feed(state, m.dead_letter("nsa-1", "nsa"), now=200.0)
    assert state.other_nodes()[0]["alerts"][0]["kind"] == "dead-letter"
    state.tick(260.0)
    assert state.other_nodes()[0]["alerts"] == []


def test_alerts_raised_on_a_node_move_to_it_when_it_turns_out_a_router() -> None:
    state = ConsoleState()
    feed(state, m.presence("mr1", "monitor", False))
    feed(state, m.state("mr1", "wlan0", 1, up=True))
    assert state.routers["mr1"].row["alert_kinds"] == ["node-offline"]


def test_the_number_of_routers_is_bounded() -> None:
    state = ConsoleState(Limits(routers=3))
    for i in range(5):
        feed(state, m.state(f"mr{i}", "wlan0", 1, up=True))
    assert sorted(state.routers) == ["mr0", "mr1", "mr2"]
    assert state.dropped == 2


def test_the_decision_log_keeps_the_last_n() -> None:
    state = ConsoleState(Limits(decisions=3))
    for t in range(6):
        feed(state, m.decision("mr1", {"video": (1 + t % 2,)}, at=float(t)))
    decisions = state.router_view("mr1")["decisions"]  # type: ignore[index]
    assert [d["at"] for d in decisions] == [5.0, 4.0, 3.0]
    assert "class video" in decisions[0]["text"]


def test_the_audit_of_operator_actions_keeps_the_last_n_newest_first() -> None:
    state = ConsoleState(Limits(audits=3))
    feed(state, m.state("mr1", "wlan0", 1, up=True))
    row = dict(state.routers["mr1"].row)
    revision = state.routers["mr1"].revision
    feed(state, m.audit("mr1", at=10.0, reason="wlan maintenance"))
    feed(
        state, m.audit("mr1", user="carol", action="release", outcome="released", bid=None, at=11.0)
    )
    feed(state, m.audit("mr1", outcome="refused", at=12.0, field="bid", detail="no link"))
    feed(state, m.audit("mr1", action="expire", outcome="expired", bid=None, at=13.0))
    assert state.routers["mr1"].revision > revision, "the router's page is told"
    assert state.routers["mr1"].row == row, "the fleet row is not touched"
    audits = state.router_view("mr1")["audits"]  # type: ignore[index]
    assert [(a["at"], a["user"], a["action"], a["outcome"]) for a in audits] == [
        (13.0, "bob", "expire", "expired"),
        (12.0, "bob", "pin", "refused"),
        (11.0, "carol", "release", "released"),
    ]
    assert audits[1]["detail"] == "bid: no link"
    assert audits[0]["class"] == "video"
    assert ("audits", 3, 3) in set(state.footprint())


def test_an_audit_record_on_another_routers_topic_is_dropped() -> None:
    state = ConsoleState()
    topic, record = m.audit("mr1")
    assert not state.feed(type(topic)(topic.kind, "mr2", topic.item), record, 100.0)
    assert state.dropped == 1
    assert "mr2" not in state.routers


def test_a_class_under_an_operator_pin_shows_the_override() -> None:
    state = ConsoleState()
    detail = "operator override by bob until 2026-01-01T00:00:00Z"
    feed(state, m.decision("mr1", {"video": (2,), "bulk": (1,)}, overrides={"video": detail}))
    classes = {c["class"]: c for c in state.router_view("mr1")["classes"]}  # type: ignore[index]
    assert classes["video"]["override"] == detail
    assert classes["bulk"]["override"] is None
    feed(state, m.decision("mr1", {"video": (1,), "bulk": (1,)}, at=101.0))
    classes = {c["class"]: c for c in state.router_view("mr1")["classes"]}  # type: ignore[index]
    assert classes["video"]["override"] is None, "released: the next decision has no override"


def test_packet_rates_are_kept_per_link_and_old_reports_have_none() -> None:
    state = ConsoleState()
    feed(state, m.metrics("mr1", "wlan0", 1, pps=(850.0, 40.0)), now=100.0)
    feed(state, m.metrics("mr1", "wlan0", 1), now=101.0)  # a monitor from before the field
    history = state.router_view("mr1")["links"][0]["history"]  # type: ignore[index]
    assert history["rx_pps"] == [850.0, None]
    assert history["tx_pps"] == [40.0, None]


def test_decisions_handovers_fallbacks_and_link_changes_become_chart_markers() -> None:
    state = ConsoleState(Limits(markers=4))
    feed(state, m.state("mr1", "eth1", 2, up=True), now=100.0)
    feed(state, m.binding("mr1", 2), now=100.5)
    feed(state, m.binding("mr1", 2, BindingEventKind.REFRESHED), now=101.0)  # no marker
    feed(state, m.state("mr1", "eth1", 2, up=False), now=102.0)
    feed(state, m.decision("mr1", {"web": (1,)}, at=102.2), now=102.3)
    fallback = FallbackState(policy_id="web.0", primary_bid=2, active_bid=1)
    feed(state, m.status("ha1", "mr1", 3, result="fallback", fallbacks=(fallback,)), now=102.4)
    markers = state.router_view("mr1")["markers"]  # type: ignore[index]
    assert [(x["at"], x["kind"]) for x in markers] == [
        (100.5, "handover"),
        (102.0, "link"),
        (102.3, "decision"),
        (102.4, "fallback"),
    ]
    assert markers[0]["label"] == "BID 2 registered to 2001:db8::1"
    assert markers[1]["label"] == "eth1 down"
    assert markers[2]["label"] == "NSA: 1 moved (metrics)"
    assert markers[3]["label"] == "fallback at the HA: web.0 BID 2 -> 1"
    feed(state, m.state("mr1", "eth1", 2, up=True), now=103.0)
    markers = state.router_view("mr1")["markers"]  # type: ignore[index]
    assert len(markers) == 4  # bounded: the oldest went
    assert markers[-1]["label"] == "eth1 up"
    back = m.status("ha1", "mr1", 4, result="fallback")
    feed(state, back, now=104.0)  # back on the primaries after a fallback: marked
    feed(state, back, now=105.0)  # again, with none before it: not marked
    markers = state.router_view("mr1")["markers"]  # type: ignore[index]
    assert [(x["at"], x["label"]) for x in markers[-2:]] == [
        (103.0, "eth1 up"),
        (104.0, "fallback at the HA: back on primary"),
    ]


def test_a_budget_near_its_cap_raises_an_alert_in_the_row_until_it_falls_back() -> None:
    state = ConsoleState(Limits(budget_alert_share=0.8))
    feed(state, m.metrics("mr1", "lte0", 2, budget=(10**9, 799_999_999)), now=100.0)
    revision, rows = state.rows_since(0)
    assert rows[0]["alert_kinds"] == []
    feed(state, m.metrics("mr1", "lte0", 2, budget=(10**9, 800_000_000)), now=101.0)
    revision, rows = state.rows_since(revision)
    assert [r["alert_kinds"] for r in rows] == [["budget-near-cap"]]
    (alert,) = state.router_view("mr1")["alerts"]  # type: ignore[index]
    assert (alert["subject"], alert["detail"]) == ("lte0", "80% of 1.0 GB used (alert at 80%)")
    feed(state, m.metrics("mr1", "lte0", 2, budget=(10**9, 900_000_000)), now=102.0)
    assert state.rows_since(revision)[1] == []  # still raised: the row did not change
    _, log = state.alerts_since(0)
    assert [(a["event"], a["kind"]) for a in log] == [("raised", "budget-near-cap")]
    feed(state, m.metrics("mr1", "lte0", 2, budget=(10**9, 1_000)), now=103.0)  # a new period
    _, rows = state.rows_since(revision)
    assert rows[0]["alerts"] == 0
    assert state.totals["with_alerts"] == 0


def test_a_report_without_a_budget_clears_its_alert() -> None:
    state = ConsoleState(Limits(budget_alert_share=0.5))
    feed(state, m.metrics("mr1", "lte0", 2, budget=(1000, 600)), now=100.0)
    assert state.routers["mr1"].row["alert_kinds"] == ["budget-near-cap"]
    feed(state, m.metrics("mr1", "lte0", 2), now=101.0)
    assert state.routers["mr1"].row["alerts"] == 0


def test_a_watch_wakes_on_a_change_of_the_routers_row_not_on_its_metrics() -> None:
    from services.console.picture import Picture

    picture = Picture(ConsoleState(), clock=lambda: 100.0)
    woken: list[str] = []
    unwatch = picture.watch("mr1", lambda: woken.append("mr1"))
    picture.watch("mr2", lambda: woken.append("mr2"))
    picture.feed(*m.state("mr1", "eth1", 2, up=True))  # a new router: its row appears
    assert woken == ["mr1"]
    picture.feed(*m.metrics("mr1", "eth1", 2))
    picture.feed(*m.metrics("mr1", "eth1", 2, rtt_ms=99.0))
    assert woken == ["mr1"]  # metrics do not change the row: no wake-up
    picture.feed(*m.state("mr1", "eth1", 2, up=False))
    picture.feed(*m.state("mr2", "eth0", 1, up=False))
    assert woken == ["mr1", "mr1", "mr2"]
    unwatch()
    picture.feed(*m.state("mr1", "eth1", 2, up=True))
    assert woken == ["mr1", "mr1", "mr2"]
