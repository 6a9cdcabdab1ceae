"""The console on the real broker: what is published shows in its JSON and its event stream."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from services.contracts import policy_xml
from services.contracts.messages import LinkMetrics, encode
from services.contracts.policy import Install
from tests.console import messages as m
from tests.console.conftest import LiveConsole
from tests.console.webapp import PASSWORDS, csrf_of
from tests.waiting import wait_for

pytestmark = pytest.mark.broker


def _logged_in(url: str) -> httpx2.Client:
    client = httpx2.Client(base_url=url, timeout=10, follow_redirects=True)
    form = client.get("/login")
    response = client.post(
        "/login",
        data={"user": "alice", "password": PASSWORDS["alice"], "csrf": csrf_of(form.text)},
    )
    assert response.status_code == 200
    assert "Fleet" in response.text
    return client


def test_published_metrics_decision_and_status_show_in_json_and_stream(
    live_console: LiveConsole,
) -> None:
    t = live_console.topics
    client = _logged_in(live_console.url)
    _, metrics = m.metrics("mr1", "wlan0", 1, rtt_ms=42.5)
    _, decision = m.decision("mr1", {"video": (1,)})
    _, document = m.document("ha1", "mr1", 1, Install(policies=(m.policy("video.0", 2),)))
    _, status = m.status("ha1", "mr1", 1)
    live_console.publish(t.link_metrics("mr1", "wlan0"), metrics)
    live_console.publish(t.decision("mr1"), decision, retain=True)
    live_console.publish(t.policy("ha1"), policy_xml.render(document))
    live_console.publish(t.status("ha1"), status)

    def shown() -> bool:
        response = client.get("/api/mr/mr1")
        if response.status_code != 200:
            return False
        view = response.json()
        return bool(view["links"]) and view["enforcement"].get("downlink", {}).get("version") == 1

    wait_for("the console to show mr1", shown, 10)
    view = client.get("/api/mr/mr1").json()
    assert view["links"][0]["latest"]["rtt_ms"] == 42.5
    assert view["ha"] == "ha1"
    assert view["classes"] == [
        {"class": "video", "chosen": [1], "ha": [2], "mr": None, "mismatch": True, "override": None}
    ]
    assert "class video" in view["decisions"][0]["text"]
    # Its own presence, retained, through the shared runtime.
    fleet = client.get("/api/fleet").json()
    assert any(
        n["node"] == "console" and n["services"] == {"console": True} for n in fleet["nodes"]
    )

    registry = live_console.service.metrics.registry
    for kind in ("link-metrics", "decision", "policy", "status", "presence"):
        taken = registry.get_sample_value("multinet_console_messages_total", {"kind": kind})
        assert taken is not None
        assert taken >= 1, kind

    # The router's stream: the full view first, then a new sample as it arrives.
    with client.stream("GET", "/events/mr/mr1") as stream:
        lines = stream.iter_lines()
        first = _next_event(lines)
        assert first["incremental"] is False
        assert first["links"][0]["latest"]["rtt_ms"] == 42.5
        _, later = m.metrics("mr1", "wlan0", 1, rtt_ms=7.25)
        sent = time.monotonic()
        live_console.publish(t.link_metrics("mr1", "wlan0"), later)
        update = _next_event(lines)
        assert update["incremental"] is True
        assert update["links"][0]["history"]["rtt_ms"] == [7.25]
        assert time.monotonic() - sent < 2.0
        assert registry.get_sample_value("multinet_console_sse_clients") == 1
        sent_events = registry.get_sample_value(
            "multinet_console_events_sent_total", {"stream": "router"}
        )
        assert sent_events is not None
        assert sent_events >= 2


def _next_event(lines: Iterator[str]) -> dict[str, Any]:
    for line in lines:
        if line.startswith("data: "):
            data = json.loads(line[6:])
            assert isinstance(data, dict)
            return data
    raise AssertionError("the stream ended")


def test_a_nodes_metrics_in_one_message_show_as_each_links_own(
    live_console: LiveConsole,
) -> None:
    """A monitor with `batch_metrics` publishes one message per period on the node's metrics
    topic: the console subscribes to it and shows every link it carries; one whose validation
    fails applies none of its entries."""
    t = live_console.topics
    client = _logged_in(live_console.url)
    wlan = m.metrics("mr1", "wlan0", 1, rtt_ms=12.5)
    lte = m.metrics("mr1", "lte0", 2, rtt_ms=48.0)
    # Refused whole (an entry of another sender), published first: nothing of it may show.
    bad = json.loads(encode(m.node_metrics("mr1", wlan, lte)[1]))
    bad["links"][1]["sender"] = "mr2"
    bad["links"][0]["rtt_ms"] = 999.0
    live_console.publish(t.node_metrics("mr1"), json.dumps(bad).encode())
    live_console.publish(t.node_metrics("mr1"), m.node_metrics("mr1", wlan, lte)[1])

    def links() -> list[dict[str, Any]]:
        response = client.get("/api/mr/mr1")
        return response.json()["links"] if response.status_code == 200 else []

    wait_for("both links of mr1", lambda: len(links()) == 2, 10)
    lte0, wlan0 = links()
    assert (lte0["interface"], lte0["bid"], lte0["history"]["rtt_ms"]) == ("lte0", 2, [48.0])
    assert (wlan0["interface"], wlan0["bid"], wlan0["history"]["rtt_ms"]) == ("wlan0", 1, [12.5])
    registry = live_console.service.metrics.registry
    sample = registry.get_sample_value
    assert sample("multinet_console_messages_total", {"kind": "node-metrics"}) == 1
    assert sample("multinet_console_messages_dropped_total", {"kind": "node-metrics"}) == 1


def test_the_nsas_audit_records_show_in_the_routers_view(live_console: LiveConsole) -> None:
    t = live_console.topics
    client = _logged_in(live_console.url)
    live_console.publish(t.link_metrics("mr1", "wlan0"), m.metrics("mr1", "wlan0", 1)[1])
    live_console.publish(t.audit("mr1"), m.audit("mr1", reason="wlan maintenance")[1])
    live_console.publish(
        t.audit("mr1"), m.audit("mr1", outcome="refused", bid=7, field="bid", detail="no link")[1]
    )

    def audits() -> list[dict[str, Any]]:
        response = client.get("/api/mr/mr1")
        return response.json().get("audits", []) if response.status_code == 200 else []

    wait_for("both audit records", lambda: len(audits()) == 2, timeout=5)
    refused, applied = audits()
    assert (refused["outcome"], refused["bid"], refused["detail"]) == ("refused", 7, "bid: no link")
    assert (applied["user"], applied["action"], applied["class"]) == ("bob", "pin", "video")
    assert applied["reason"] == "wlan maintenance"
    # The router's page has the table the script fills.
    assert 'id="audits"' in client.get("/mr/mr1").text


def test_a_budget_near_its_cap_in_the_monitors_reports_raises_an_alert_in_the_fleet(
    live_console: LiveConsole,
) -> None:
    """The reports come from the monitor's own link tracker and budget meter (1 MB a month,
    counted from interface counters), published on the real broker; the console's fleet view
    shows a budget-near-cap alert once 80 % of the cap is used, and none after a new period."""
    from services.monitor.budget import BudgetMeter, BudgetPeriod
    from services.monitor.change import ChangeSettings
    from services.monitor.config import LinkConfig
    from services.monitor.counters import Counters
    from services.monitor.link import LinkTracker
    from services.monitor.netlink import InterfaceState
    from services.monitor.state import LinkStateSettings
    from services.monitor.stats import ProbeSettings

    t = live_console.topics
    client = _logged_in(live_console.url)
    start = 1_780_000_000.0  # 2026-05-28: the month ends at 1_780_272_000 (June 1st)
    meter = BudgetMeter(10**6, BudgetPeriod(), None, start)
    tracker = LinkTracker(
        "mr7",
        LinkConfig.model_validate(
            {"interface": "lte0", "bid": 2, "technology": "lte", "budget_bytes": 10**6}
        ),
        window=ProbeSettings(window=10),
        state=LinkStateSettings(down_after=3, up_after=2),
        publish=ChangeSettings(period_s=1.0),
        initial=InterfaceState("lte0", True, 7, True, True, ("2001:db8:7::10",)),
        now=0.0,
        budget=meter,
    )

    def report(used: int, at: float, tick: float) -> dict[str, Any]:
        tracker.counters(Counters(used, 0, used // 1000, 0, tick), at)
        (metrics,) = [x for x in tracker.tick(tick) if isinstance(x, LinkMetrics)]
        live_console.publish(t.link_metrics("mr7", "lte0"), metrics)
        return metrics.model_dump()

    def row() -> dict[str, Any] | None:
        rows = client.get("/api/fleet").json()["rows"]
        return next((r for r in rows if r["mr"] == "mr7"), None)

    report(0, start, 10.0)  # the baseline
    first = report(700_000, start + 60, 20.0)
    assert first["budget_used_bytes"] == 700_000
    wait_for("mr7 in the fleet", lambda: row() is not None, 10)
    assert row()["alert_kinds"] == []  # type: ignore[index]
    report(820_000, start + 120, 30.0)
    wait_for("the budget alert", lambda: row()["alert_kinds"] == ["budget-near-cap"], 10)  # type: ignore[index]
    (alert,) = client.get("/api/mr/mr7").json()["alerts"]
    assert (alert["kind"], alert["subject"]) == ("budget-near-cap", "lte0")
    assert alert["detail"].startswith("82% of 1.0 MB used")
    # The next month: the meter starts from zero, the alert goes.
    report(830_000, 1_780_272_000.0 + 60, 40.0)
    wait_for("the alert cleared", lambda: row()["alerts"] == 0, 10)  # type: ignore[index]
