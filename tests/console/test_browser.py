"""The console in a real browser (headless Chromium through chromedriver and selenium): log in,
see the fleet, and see a link go down on the page without a reload."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from services.contracts.messages import BindingEventKind
from tests.console import messages as m
from tests.console.chromium import chromium, require
from tests.console.conftest import LiveConsole
from tests.console.webapp import PASSWORDS

pytestmark = [pytest.mark.broker, pytest.mark.browser]


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    require()
    with chromium() as driver:
        yield driver


def test_the_fleet_page_shows_a_link_going_down_live(
    live_console: LiveConsole, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    t = live_console.topics
    for mr in ("mr1", "mr2"):
        for interface, bid in (("wlan0", 1), ("lte0", 2)):
            _, up = m.state(mr, interface, bid, up=True)
            live_console.publish(t.link_state(mr, interface), up, retain=True)
    _, presence = m.presence("ha1", "prem", True)
    live_console.publish(t.presence("ha1", "prem"), presence, retain=True)
    for bid, pipe in ((1, "vxlan"), (2, None)):
        _, bound = m.binding("mr2", bid, pipe=pipe)
        live_console.publish(t.binding_event("mr2", bid), bound)

    browser.get(live_console.url + "/")
    assert browser.current_url.endswith("/login")
    browser.find_element(By.ID, "user").send_keys("alice")
    browser.find_element(By.ID, "password").send_keys(PASSWORDS["alice"])
    browser.find_element(By.ID, "login").click()
    # A row is replaced whole when it changes: an element found just before may be stale.
    wait = WebDriverWait(
        browser, 10, poll_frequency=0.05, ignored_exceptions=(StaleElementReferenceException,)
    )

    def text(selector: str) -> str:
        return str(browser.find_element(By.CSS_SELECTOR, selector).text)

    def names() -> list[str | None]:
        return [
            r.get_attribute("data-mr") for r in browser.find_elements(By.CSS_SELECTOR, "#rows tr")
        ]

    # Both routers, each with its two links up (the retained states may come in two events).
    wait.until(lambda d: names() == ["mr1", "mr2"])
    wait.until(lambda d: all("2 / 2" in text(f"#rows tr[data-mr='{mr}']") for mr in ("mr1", "mr2")))
    wait.until(lambda d: d.find_element(By.ID, "live").text == "live")
    # The page marks its first fleet drawn (what bench/console.py --render times).
    wait.until(
        lambda d: d.execute_script("return performance.getEntriesByName('fleet-rendered').length")
    )
    cell = "#rows tr[data-mr='mr2'] td.alerts-cell"
    assert text(cell) == "0"

    _, down = m.state("mr2", "lte0", 2, up=False)
    sent = time.monotonic()
    live_console.publish(t.link_state("mr2", "lte0"), down, retain=True)
    WebDriverWait(
        browser, 2, poll_frequency=0.02, ignored_exceptions=(StaleElementReferenceException,)
    ).until(lambda d: "link-down" in text(cell))
    shown_after = time.monotonic() - sent
    assert "1 / 2" in text("#rows tr[data-mr='mr2']")
    assert [
        r.get_attribute("data-mr")
        for r in browser.find_elements(By.CSS_SELECTOR, "#rows tr.alerting")
    ] == ["mr2"]
    assert text("#rows tr[data-mr='mr1'] td.alerts-cell") == "0"
    # The search box filters the rows as one types (an alert kind matches too).
    search = browser.find_element(By.ID, "search")
    search.send_keys("link-down")
    wait.until(
        lambda d: not d.find_element(By.CSS_SELECTOR, "#rows tr[data-mr='mr1']").is_displayed()
    )
    assert browser.find_element(By.CSS_SELECTOR, "#rows tr[data-mr='mr2']").is_displayed()
    search.clear()
    search.send_keys(" ")  # an input event with an empty query: every row again
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#rows tr[data-mr='mr1']").is_displayed())
    browser.save_screenshot(str(tmp_path / "fleet.png"))
    assert (tmp_path / "fleet.png").stat().st_size > 0
    print(f"link-down shown on the fleet page {shown_after * 1000:.0f} ms after it was published")

    # The router's page: its links, the down one marked, with uPlot's sparklines drawn from
    # the uPlot the console serves itself.
    for rtt in (20.0, 35.0, 28.0):
        _, sample = m.metrics("mr2", "wlan0", 1, rtt_ms=rtt)
        live_console.publish(t.link_metrics("mr2", "wlan0"), sample)
    browser.get(live_console.url + "/mr/mr2")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".link")) == 2)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".link[data-interface='wlan0'] canvas"))
    assert browser.execute_script("return typeof uPlot") == "function"
    down_card = browser.find_element(By.CSS_SELECTOR, ".link.down")
    assert "lte0" in down_card.text
    assert "carrier lost" in down_card.text
    # Each binding with its pipe kind ("unknown" when no event named it).
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#bindings tr")) == 2)
    cells = [
        [td.text for td in row.find_elements(By.TAG_NAME, "td")][:4]
        for row in browser.find_elements(By.CSS_SELECTOR, "#bindings tr")
    ]
    assert cells == [
        ["1", "registered", "2001:db8::1", "vxlan"],
        ["2", "registered", "2001:db8::1", "unknown"],
    ]
    browser.save_screenshot(str(tmp_path / "router.png"))
    # No script error, no resource refused (CSP) or missing, on either page.
    logs: list[dict[str, object]] = browser.get_log("browser")  # type: ignore[no-untyped-call]
    errors = [e for e in logs if e["level"] == "SEVERE"]
    assert errors == []


def test_the_routers_packet_rate_chart_draws_each_link_and_marks_events_live(
    live_console: LiveConsole, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    """The chart in the style of the paper's Figure 7: packets per second per link and
    direction, with a marker for a decision arriving while the page is open (no reload)."""
    t = live_console.topics
    for second in range(3):
        for interface, bid, pps in (("wlan0", 1, (850.0, 420.0)), ("lte0", 2, (3.0, 1.0))):
            _, sample = m.metrics("mr3", interface, bid, pps=pps)
            live_console.publish(t.link_metrics("mr3", interface), sample)
        time.sleep(0.05 * second)
    _, bound = m.binding("mr3", 2, BindingEventKind.COA_CHANGED, coa="2001:db8:2::7")
    live_console.publish(t.binding_event("mr3", 2), bound)
    browser.get(live_console.url + "/login")
    browser.find_element(By.ID, "user").send_keys("alice")
    browser.find_element(By.ID, "password").send_keys(PASSWORDS["alice"])
    browser.find_element(By.ID, "login").click()
    # The click returns before the form's answer: the session cookie is set only once the
    # browser has followed the login's redirect (to the fleet page). Going to the router page
    # before that got the login page again, and no chart (seen once under CI load).
    WebDriverWait(browser, 30, poll_frequency=0.05).until(
        lambda d: urlsplit(d.current_url).path != "/login"
    )
    browser.get(live_console.url + "/mr/mr3")
    wait = WebDriverWait(
        browser, 10, poll_frequency=0.05, ignored_exceptions=(StaleElementReferenceException,)
    )
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#rates canvas"))
    chart = browser.execute_script("return window.mnRate")
    assert chart["labels"] == ["lte0 down (rx)", "lte0 up (tx)", "wlan0 down (rx)", "wlan0 up (tx)"]
    # uPlot's aligned data: times, then one column per label.
    columns = dict(zip(chart["labels"], chart["data"][1:], strict=True))
    assert max(v for v in columns["wlan0 down (rx)"] if v is not None) == 850.0
    assert max(v for v in columns["wlan0 up (tx)"] if v is not None) == 420.0
    assert max(v for v in columns["lte0 down (rx)"] if v is not None) == 3.0
    assert [x["kind"] for x in chart["markers"]] == ["handover"]

    def kinds() -> list[str | None]:
        items = browser.find_elements(By.CSS_SELECTOR, "#rate-markers li")
        return [li.get_attribute("data-kind") for li in items]

    assert kinds() == ["handover"]
    _, decision = m.decision("mr3", {"web": (2,)})
    live_console.publish(t.decision("mr3"), decision)
    wait.until(lambda d: kinds() == ["decision", "handover"])  # newest first
    assert "NSA: 1 moved" in browser.find_element(By.CSS_SELECTOR, "#rate-markers li").text
    browser.save_screenshot(str(tmp_path / "router-rates.png"))
    assert (tmp_path / "router-rates.png").stat().st_size > 0
    logs: list[dict[str, object]] = browser.get_log("browser")  # type: ignore[no-untyped-call]
    assert [e for e in logs if e["level"] == "SEVERE"] == []
