"""`multinet testbed run --console`: the operator console runs beside the NSA and the gateway,
on the run's broker, and shows the test bed's mobile router while the scenario runs.

The first test reads the console's address and one-time login from what the run prints (as a
person would), logs in over HTTP (login form, CSRF token, session cookie) and polls the JSON
endpoints from another thread until the fleet lists mr1 with its links and both bindings.

The second drives a real browser (headless Chromium) to the router's page while the bed is up
(`--console-hold`, ended early with Ctrl-C, as a person would, once the test is done), pins
the scenario's class to the other BID with the page's form, and reads the kernel back (`nft
-j list table` in the HA's and the MR's namespaces): both PREM workers enforce the pin within
a few seconds, and the page shows the class as an operator override, with the NSA's audit
record; then the same for the release. The third keeps the router's page open (no reload)
with the class on eth1, drops eth1's carrier (its AR's port down) and sees the class on eth0,
chosen and enforced at both ends, on the page within 2 s; its packet-rate chart shows the
stream's packets on eth1 while the class is there, and marks eth1 going down and the NSA's
decision that moved the class.
"""

from __future__ import annotations

import _thread
import http.cookiejar
import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from services import netns
from services.contracts.settings import load_service_file
from services.prem.config import PremSettings
from services.prem.core.nft_layers import flatten
from services.prem.core.nft_parse import parse_table
from services.prem.core.nft_render import table_name
from services.testbed import runner, scenario
from services.testbed.addressing import MOBILE_ROUTER, Naming, mr_link
from services.testbed.rundata import RunOptions
from services.testbed.scenario import Decider

pytestmark = [pytest.mark.kernel, pytest.mark.broker, pytest.mark.timeout(240)]

#: A short run: the stream on the default path for a few seconds, the NSA deciding.
SHORT = {
    "name": "console-short",
    "deciders": ["nsa"],
    "stream": {"rate_bps": 500000, "interval_s": 0.02, "port": 8080},
    "end_at": 8,
    "nsa": {
        "profiles": [
            {
                "name": "http",
                "selectors": [{"next_header": 6, "dst_port": {"first": 8080, "last": 8080}}],
                "steering": "priority",
                "order": ["wlan", "lte"],
                "priority": 10,
            }
        ]
    },
    "steps": [{"at": 0, "label": "t0", "wait": [{"until": "flows", "interface": "eth0"}]}],
}
_LOGIN_LINE = re.compile(r"console: (http://\S+/)\s+login: (\S+) / (\S+)")


class Session:
    """A logged-in browser, as far as HTTP goes: cookies kept, redirects followed."""

    def __init__(self, url: str, user: str, password: str) -> None:
        self.url = url.rstrip("/")
        jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        form = self.get("/login").decode()
        token = re.search(r'name="csrf" value="([^"]+)"', form)
        assert token is not None, form
        body = urllib.parse.urlencode({"csrf": token.group(1), "user": user, "password": password})
        with self.opener.open(self.url + "/login", body.encode(), timeout=10) as reply:
            landed = reply.geturl()  # a refused login lands on /login?failed=1 (401: raises)
        assert landed == self.url + "/", landed

    def get(self, path: str) -> bytes:
        with self.opener.open(self.url + path, timeout=10) as reply:
            data: bytes = reply.read()
            return data

    def json(self, path: str) -> Any:
        return json.loads(self.get(path))


class Watcher:
    """Waits for the console's line, logs in and polls the fleet until it lists the MR."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.access: tuple[str, str, str] | None = None
        self.fleet: dict[str, Any] | None = None
        self.router: dict[str, Any] | None = None
        self.seen_at: float | None = None
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def say(self, line: str) -> None:
        self.lines.append(line)
        found = _LOGIN_LINE.search(line)
        if found is not None and self._thread is None:
            self.access = (found.group(1), found.group(2), found.group(3))
            self._thread = threading.Thread(target=self._watch, daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        assert self.access is not None
        try:
            client = Session(*self.access)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                fleet = client.json("/api/fleet")
                rows = {row["mr"]: row for row in fleet["rows"]}
                row = rows.get(MOBILE_ROUTER)
                if row is not None and row["bindings"] >= 2 and row["links_up"] >= 2:
                    self.fleet, self.seen_at = fleet, time.monotonic()
                    self.router = client.json(f"/api/mr/{MOBILE_ROUTER}")
                    return
                time.sleep(0.5)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join(10)


def test_the_console_shows_the_test_beds_router_while_the_scenario_runs(
    broker: tuple[str, int], naming: Naming, tmp_path: Path
) -> None:
    file = tmp_path / "console-short.yaml"
    file.write_text(yaml.safe_dump(SHORT), encoding="utf-8")
    loaded, path = scenario.load(str(file))
    options = RunOptions(
        scenario=loaded,
        scenario_file=path,
        decider=Decider.NSA,
        out=tmp_path / "run",
        prefix=naming.prefix,
        console=True,
    )
    watcher = Watcher()
    data = runner.run(options, say=watcher.say)
    watcher.join()
    print("\n".join(watcher.lines))
    assert data.failure is None, data.failure
    assert watcher.error is None, repr(watcher.error)
    assert watcher.access is not None, "the run printed no console line"
    url, _user, password = watcher.access
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url)
    assert data.console is not None
    assert data.console.password == password

    # Seen while the scenario ran (the console stops with it).
    assert watcher.fleet is not None, "mr1 never showed"
    assert watcher.seen_at is not None
    assert watcher.seen_at <= data.ended
    row = next(r for r in watcher.fleet["rows"] if r["mr"] == MOBILE_ROUTER)
    assert row["ha"] == "ha1"
    assert watcher.router is not None
    active = [b for b in watcher.router["bindings"] if b["active"]]
    assert {b["bid"] for b in active} == {1, 2}
    # mobility-events read the pipe kind from the BUs' and BAs' vendor-specific option.
    assert {b["pipe"] for b in active} == {data.pipe_kind}

    # Only the hash is written down; the console is gone with the test bed.
    settings = (options.out / "config" / "console.yaml").read_text()
    assert password not in settings
    assert "pbkdf2_sha256$" in settings
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "healthz", timeout=1.0)
    assert not any(netns.exists(n) for n in naming.all())


#: The class of SHORT; the NSA puts it on BID 1 (wlan, eth0 first in its order).
CLASS = "http"
HOME_BID, PIN_BID = 1, 2
#: How long after the form is sent the kernel and the page must show it.
WITHIN_S = 5.0


def enforced_bids(out: Path, naming: Naming, role: str) -> set[int | None]:
    """The BIDs the PREM worker of `role` ("ha", "mr") enforces for CLASS's policies now, read
    from the kernel: its nftables table listed as JSON in the node's namespace (numeric, as
    the back end's libnftables context lists it), decoded as the nftables back end decodes it."""
    settings = load_service_file(out / "config" / f"prem-{role}.yaml", "prem", PremSettings)
    table = table_name(settings.settings)
    argv = ["nft", "-j", "-n", "list", "table", "inet", table]
    listed = netns.run(naming.ns(role), argv, check=False)
    if not listed.strip():
        return set()  # no table yet: the worker has applied nothing
    listing = json.loads(listed)
    rules = flatten(parse_table(listing, table, settings.settings).layers)
    return {r.bid for r in rules if r.policy_id.split(".")[0] == CLASS}


def log_in(browser: Any, url: str, user: str, password: str) -> None:
    """The login form filled and sent; back on the fleet page (a click does not wait for the
    navigation it starts)."""
    from selenium.webdriver.common.by import By

    browser.get(url)
    browser.find_element(By.ID, "user").send_keys(user)
    browser.find_element(By.ID, "password").send_keys(password)
    browser.find_element(By.ID, "login").click()
    landed(browser, lambda u: u == url)


def landed(browser: Any, where: Callable[[str], bool], timeout: float = 10) -> None:
    """Wait until the browser's address satisfies `where` (AssertionError with it if not)."""
    deadline = time.monotonic() + timeout
    while not where(browser.current_url):
        assert time.monotonic() < deadline, browser.current_url
        time.sleep(0.02)


class PinDriver:
    """In a thread, once the run prints the console's line: a headless Chromium logs in as
    the run's operator, pins CLASS to PIN_BID on the router's page, checks kernel and page,
    releases, checks again; then ends the bed's hold (Ctrl-C) so the run finishes."""

    def __init__(self, out: Path, naming: Naming, shots: Path) -> None:
        self.out, self.naming, self.shots = out, naming, shots
        self.lines: list[str] = []
        self.access: tuple[str, str, str] | None = None
        self.error: BaseException | None = None
        self.timings: dict[str, float] = {}
        self.seen: dict[str, Any] = {}
        self.holding = threading.Event()
        self.done = threading.Event()
        self.run_over = threading.Event()
        self._thread: threading.Thread | None = None

    def say(self, line: str) -> None:
        self.lines.append(line)
        if "the console stays up" in line:
            self.holding.set()
        found = _LOGIN_LINE.search(line)
        if found is not None and self._thread is None:
            self.access = (found.group(1), found.group(2), found.group(3))
            self._thread = threading.Thread(target=self._drive, daemon=True)
            self._thread.start()

    def _drive(self) -> None:
        try:
            from tests.console.chromium import chromium

            with chromium() as browser:
                self.script(browser)
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.done.set()
            # The hold is inside the run's try (Ctrl-C ends it): interrupt only once it began,
            # and never after the run returned.
            if self.holding.wait(240) and not self.run_over.is_set():
                _thread.interrupt_main()

    def script(self, browser: Any) -> None:
        """What the browser does once the run printed the console's line."""
        self._pin_and_release(browser)

    def _kernel(self) -> dict[str, set[int | None]]:
        return {role: enforced_bids(self.out, self.naming, role) for role in ("ha", "mr")}

    def _until(self, what: str, check: Callable[[], bool], timeout: float) -> float:
        """Seconds until `check()` held (AssertionError naming `what` after `timeout`)."""
        started = time.monotonic()
        while not check():
            if time.monotonic() - started > timeout:
                raise AssertionError(f"{what}: not within {timeout:g} s")
            time.sleep(0.05)
        return time.monotonic() - started

    def _pin_and_release(self, browser: Any) -> None:
        from selenium.common.exceptions import (
            NoSuchElementException,
            StaleElementReferenceException,
        )
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import Select

        assert self.access is not None
        url, user, password = self.access
        log_in(browser, url, user, password)
        page = f"{url}mr/{MOBILE_ROUTER}"

        def cells(selector: str) -> list[str]:
            try:
                return [
                    str(td.text) for td in browser.find_elements(By.CSS_SELECTOR, selector + " td")
                ]
            except StaleElementReferenceException:
                return []

        def row() -> list[str]:
            return cells(f"#classes tr[data-class='{CLASS}']")

        def form() -> Any:
            return browser.find_element(By.CSS_SELECTOR, f"form.pin[data-class='{CLASS}']")

        # The pin forms list the classes known when the page is served: wait for the NSA's
        # first decision and for both PREM workers to enforce it (kernel and page).
        deadline = time.monotonic() + 90
        while True:
            browser.get(page)
            try:
                form()
                break
            except NoSuchElementException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)
        self._until(
            "the class on BID 1 in both kernels",
            lambda: self._kernel() == {"ha": {HOME_BID}, "mr": {HOME_BID}},
            60,
        )
        self._until("the class row on BID 1", lambda: row()[1:4] == ["1", "1", "1"], 10)
        self.seen["before"] = row()
        # Act once the scenario's own steps are over (the bed held up), not under them.
        assert self.holding.wait(120), "the scenario never ended"
        # One read can meet the table while the page re-renders it (a stale element): retried.
        self._until(
            "the class row still on BID 1 once the scenario is over",
            lambda: row()[1:4] == ["1", "1", "1"],
            10,
        )
        self.seen["before"] = row()
        browser.save_screenshot(str(self.shots / "router-before-pin.png"))

        # Pin to the other BID for 60 s with the page's form.
        Select(form().find_element(By.NAME, "bid")).select_by_value(str(PIN_BID))
        duration = form().find_element(By.NAME, "duration_s")
        duration.clear()
        duration.send_keys("60")
        form().find_element(By.NAME, "reason").send_keys("kernel test")
        form().find_element(By.CSS_SELECTOR, "button[value='pin']").click()
        sent = time.monotonic()
        landed(browser, lambda u: u.endswith("?sent=pin"))
        assert browser.find_element(By.ID, "pin-sent").is_displayed()
        self._until(
            "the pin in both kernels",
            lambda: self._kernel() == {"ha": {PIN_BID}, "mr": {PIN_BID}},
            WITHIN_S,
        )
        self.timings["pin kernel"] = time.monotonic() - sent
        self._until(
            "the class row showing the override, enforced at both ends",
            lambda: row()[1:4] == ["2", "2", "2"] and "operator override by" in row()[4],
            WITHIN_S + sent - time.monotonic(),
        )
        self.timings["pin page"] = time.monotonic() - sent
        self.seen["pinned"] = row()
        self._until(
            "the NSA's audit record of the pin",
            lambda: (
                cells("#audits tr[data-outcome='applied']")[1:5]
                == [user, "pin", CLASS, str(PIN_BID)]
            ),
            WITHIN_S,
        )
        self.seen["audit pin"] = cells("#audits tr[data-outcome='applied']")
        decisions = browser.find_element(By.ID, "decisions")
        self.seen["decision"] = str(decisions.get_attribute("textContent"))
        browser.save_screenshot(str(self.shots / "router-pinned.png"))

        # Release it from the same page: the NSA decides the class again (back to BID 1).
        form().find_element(By.CSS_SELECTOR, "button[value='release']").click()
        released = time.monotonic()
        landed(browser, lambda u: u.endswith("?sent=release"))
        self._until(
            "the class back on BID 1 in both kernels",
            lambda: self._kernel() == {"ha": {HOME_BID}, "mr": {HOME_BID}},
            15,
        )
        self.timings["release kernel"] = time.monotonic() - released
        self._until(
            "the class row without the override",
            lambda: row()[1:5] == ["1", "1", "1", "-"],
            15 + released - time.monotonic(),
        )
        self.timings["release page"] = time.monotonic() - released
        self._until(
            "the NSA's audit record of the release",
            lambda: cells("#audits tr[data-outcome='released']")[1:4] == [user, "release", CLASS],
            WITHIN_S,
        )
        self.seen["released"] = row()
        browser.save_screenshot(str(self.shots / "router-released.png"))
        logs: list[dict[str, object]] = browser.get_log("browser")
        self.seen["errors"] = [e for e in logs if e["level"] == "SEVERE"]

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join(30)


def run_with_browser(
    spec: dict[str, Any], driver_type: type[PinDriver], naming: Naming, tmp_path: Path
) -> PinDriver:
    """Run the test bed on `spec` with the console held open while `driver_type` drives a
    headless Chromium against it; the checks every such run must pass, then the driver."""
    from tests.console.chromium import require

    require()
    file = tmp_path / "console-browser.yaml"
    file.write_text(yaml.safe_dump(spec), encoding="utf-8")
    loaded, path = scenario.load(str(file))
    options = RunOptions(
        scenario=loaded,
        scenario_file=path,
        decider=Decider.NSA,
        out=tmp_path / "run",
        prefix=naming.prefix,
        console=True,
        console_hold_s=300,
    )
    driver = driver_type(options.out, naming, tmp_path)
    try:
        data = runner.run(options, say=driver.say)
    finally:
        driver.run_over.set()
    driver.join()
    print("\n".join(driver.lines))
    print(json.dumps({"timings_s": driver.timings, "seen": driver.seen}, indent=1, default=str))
    assert driver.access is not None, "the run printed no console line"
    assert driver.done.is_set(), "the browser never finished"
    assert driver.error is None, repr(driver.error)
    assert data.failure is None, data.failure
    assert driver.seen["errors"] == []
    assert not any(netns.exists(n) for n in naming.all())
    return driver


@pytest.mark.browser
@pytest.mark.timeout(420)
def test_a_pin_made_in_the_page_is_enforced_in_both_kernels_and_shows_as_an_override(
    broker: tuple[str, int], naming: Naming, tmp_path: Path
) -> None:
    driver = run_with_browser(SHORT, PinDriver, naming, tmp_path)
    assert "operator override by operator" in driver.seen["decision"]
    for shot in ("router-before-pin", "router-pinned", "router-released"):
        assert (tmp_path / f"{shot}.png").stat().st_size > 0


LTE_FIRST = {
    **SHORT,
    "name": "console-carrier",
    "nsa": {"profiles": [{**SHORT["nsa"]["profiles"][0], "order": ["lte", "wlan"]}]},  # type: ignore[index]
    "steps": [{"at": 0, "label": "t0", "wait": [{"until": "flows", "interface": "eth1"}]}],
}
#: How soon after eth1's carrier drops the router's page must show the class on eth0.
CARRIER_WITHIN_S = 2.0
#: The stream's packets per second the chart must show on the carrying link (500 kbit/s in
#: chunks every 20 ms: some 50 chunks a second, each at least one packet).
STREAM_PPS = 20.0


def chart_rate(browser: Any, interface: str, samples: int = 5) -> float:
    """The highest packets/s of `interface` (received or sent) among the last `samples` of
    the page's packet-rate chart (`window.mnRate`: labels, uPlot's aligned data, markers)."""
    chart = browser.execute_script("return window.mnRate")
    columns = dict(zip(chart["labels"], chart["data"][1:], strict=False))
    values = [
        v
        for label in (f"{interface} down (rx)", f"{interface} up (tx)")
        for v in [x for x in columns.get(label, []) if x is not None][-samples:]
    ]
    return max(values, default=0.0)


def chart_markers(browser: Any, since: float) -> list[tuple[str, str]]:
    """(kind, label) of the chart's markers at or after unix time `since`, oldest first, as
    the page holds them and lists them (the list's items carry kind and time)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    held = browser.execute_script("return window.mnRate.markers")
    try:
        listed = {
            (li.get_attribute("data-kind"), float(li.get_attribute("data-at")))
            for li in browser.find_elements(By.CSS_SELECTOR, "#rate-markers li")
        }
    except StaleElementReferenceException:
        return []
    return [
        (m["kind"], m["label"]) for m in held if m["at"] >= since and (m["kind"], m["at"]) in listed
    ]


class CarrierDriver(PinDriver):
    """In the browser, the router's page open (never reloaded after): the class on BID 2
    (eth1) at both ends; eth1's carrier dropped (its AR's port down, as the scenario's
    `carrier` action does); the page shows the class on BID 1 (eth0) chosen and enforced."""

    def script(self, browser: Any) -> None:
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.common.by import By

        assert self.access is not None
        url, user, password = self.access
        log_in(browser, url, user, password)
        browser.get(f"{url}mr/{MOBILE_ROUTER}")

        def row() -> list[str]:
            selector = f"#classes tr[data-class='{CLASS}'] td"
            try:
                return [str(td.text) for td in browser.find_elements(By.CSS_SELECTOR, selector)]
            except StaleElementReferenceException:
                return []

        def link_down() -> bool:
            cards = browser.find_elements(By.CSS_SELECTOR, ".link.down[data-interface='eth1']")
            return len(cards) == 1

        self._until(
            "the class on BID 2 in both kernels",
            lambda: self._kernel() == {"ha": {PIN_BID}, "mr": {PIN_BID}},
            90,
        )
        self._until("the class row on BID 2", lambda: row()[1:4] == ["2", "2", "2"], 10)
        self.seen["before"] = row()
        self._until(
            "the stream's packets on eth1 in the chart",
            lambda: chart_rate(browser, "eth1") >= STREAM_PPS,
            10,
        )
        self.seen["eth1 pps"] = chart_rate(browser, "eth1")
        assert self.holding.wait(120), "the scenario never ended"
        # One read can meet the table while the page re-renders it (a stale element): retried.
        self._until(
            "the class row still on BID 2 once the scenario is over",
            lambda: row()[1:4] == ["2", "2", "2"],
            10,
        )
        self.seen["before"] = row()
        browser.save_screenshot(str(self.shots / "router-before-carrier-loss.png"))
        port = mr_link("eth1").port
        wall = time.time()  # the console stamps markers with its (this host's) clock
        netns.run(self.naming.ns(mr_link("eth1").router), ["ip", "link", "set", port, "down"])
        dropped = time.monotonic()
        self._until("eth1 shown down", link_down, CARRIER_WITHIN_S)
        self.timings["link down page"] = time.monotonic() - dropped
        self._until(
            "the class row on eth0 (BID 1), chosen and enforced at both ends",
            lambda: row()[1:4] == ["1", "1", "1"],
            CARRIER_WITHIN_S + dropped - time.monotonic(),
        )
        self.timings["class on eth0 page"] = time.monotonic() - dropped
        self.seen["after"] = row()
        browser.save_screenshot(str(self.shots / "router-after-carrier-loss.png"))
        self.timings["class on eth0 kernels"] = (
            time.monotonic()
            - dropped
            + self._until(
                "the class on BID 1 in both kernels",
                lambda: self._kernel() == {"ha": {HOME_BID}, "mr": {HOME_BID}},
                CARRIER_WITHIN_S,
            )
        )
        # The chart marks both: eth1 going down, and the NSA's decision that moved the class.
        self._until(
            "eth1's drop and the decision marked on the packet-rate chart",
            lambda: {"link", "decision"} <= {k for k, _ in chart_markers(browser, wall)},
            5,
        )
        self.seen["markers"] = chart_markers(browser, wall)
        browser.execute_script(
            "document.getElementById('rates').previousElementSibling.scrollIntoView()"
        )
        browser.save_screenshot(str(self.shots / "router-rates-carrier-loss.png"))
        logs: list[dict[str, object]] = browser.get_log("browser")
        self.seen["errors"] = [e for e in logs if e["level"] == "SEVERE"]


@pytest.mark.browser
@pytest.mark.timeout(420)
def test_the_routers_page_shows_the_class_leaving_a_dropped_link_within_2_s(
    broker: tuple[str, int], naming: Naming, tmp_path: Path
) -> None:
    driver = run_with_browser(LTE_FIRST, CarrierDriver, naming, tmp_path)
    assert ("link", "eth1 down") in driver.seen["markers"]
    for shot in (
        "router-before-carrier-loss",
        "router-after-carrier-loss",
        "router-rates-carrier-loss",
    ):
        assert (tmp_path / f"{shot}.png").stat().st_size > 0
