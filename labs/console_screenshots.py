"""Screenshots of the operator console fed by a real test bed run (the README's pictures).

    sudo .venv/bin/python -m labs.console_screenshots [--scenario figure7] [--out docs]

Runs the scenario on the namespace test bed with `--console` (and a hold, in case), reads the
console's URL and one-time login from what the run prints, and when the run prints `--when`
(default: Figure 7's return to eth1 after the handover, so the page shows sparklines, both
bindings, one moved, and http bound to BID 2, and its packet-rate chart the flows leaving eth1
and coming back, with the decisions and handovers marked) logs in with headless Chromium and
saves the fleet page and the router page of mr1 (the whole page, up to `ROUTER_MAX_HEIGHT`) as
`console-fleet.png` and `console-router.png`, reduced to a palette so each stays small.
Needs root (the test bed), chromium and chromium-driver (scripts/setup.sh installs them for
the tests).
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
import time
from pathlib import Path

from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from services.testbed import runner, scenario
from services.testbed.addressing import MOBILE_ROUTER
from services.testbed.rundata import RunOptions
from services.testbed.scenario import Decider

_LOGIN_LINE = re.compile(r"console: (http://\S+/)\s+login: (\S+) / (\S+)")
HOLD_S = 60.0
WIDTH, HEIGHT = 1200, 1000
#: The router's page is taken whole (links, chart, bindings, classes, decisions, audit) up to
#: this height.
ROUTER_MAX_HEIGHT = 2000
_OUT = Path("/var/tmp/multinet-testbed")  # noqa: S108 - the test bed's own, root-only


def _browser() -> webdriver.Chrome:
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={WIDTH},{HEIGHT}",
        "--hide-scrollbars",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def _small(path: Path) -> int:
    """Reduce a screenshot to a 64-colour palette (pages are flat colours); its new size."""
    with Image.open(path) as image:
        reduced = image.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)
        reduced.save(path, optimize=True)
    return path.stat().st_size


def capture(url: str, user: str, password: str, out: Path) -> list[Path]:
    """Log in and save the fleet page and mr1's page."""
    browser = _browser()
    saved = []
    try:
        wait = WebDriverWait(browser, 20, poll_frequency=0.1)
        browser.get(url + "login")
        browser.find_element(By.ID, "user").send_keys(user)
        browser.find_element(By.ID, "password").send_keys(password)
        browser.find_element(By.ID, "login").click()
        wait.until(
            lambda d: d.find_elements(By.CSS_SELECTOR, f"#rows tr[data-mr='{MOBILE_ROUTER}']")
        )
        wait.until(lambda d: d.find_element(By.ID, "live").text == "live")
        time.sleep(1.5)
        fleet = out / "console-fleet.png"
        browser.save_screenshot(str(fleet))
        saved.append(fleet)
        browser.get(f"{url}mr/{MOBILE_ROUTER}")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".link canvas")) >= 2)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#bindings tr"))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#rates canvas"))
        time.sleep(1.0)
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(WIDTH, min(ROUTER_MAX_HEIGHT, int(height) + 20))
        time.sleep(1.0)  # the chart is redrawn at the new size with the next event
        router = out / "console-router.png"
        browser.save_screenshot(str(router))
        saved.append(router)
    finally:
        browser.quit()
    for path in saved:
        print(f"{path}: {_small(path) // 1024} KiB")
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="figure7")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--prefix", default="mtbshot")
    parser.add_argument(
        "--when",
        default="flows back on eth1",
        help="take the pictures when a line of the run's output holds this (or after the "
        "scenario, if none does)",
    )
    args = parser.parse_args(argv)
    loaded, path = scenario.load(args.scenario)
    access: list[str] = []
    done: list[list[Path]] = []
    errors: list[BaseException] = []
    started: list[bool] = []
    holding: list[bool] = []

    def shoot() -> None:
        try:
            done.append(capture(access[0], access[1], access[2], args.out))
        except BaseException as exc:
            errors.append(exc)

    def say(line: str) -> None:
        print(line, flush=True)
        found = _LOGIN_LINE.search(line)
        if found is not None:
            access[:] = list(found.groups())
        if "the scenario is over" in line:
            holding.append(True)
        due = args.when in line or holding
        if due and access and not started:
            started.append(True)
            threading.Thread(target=shoot, daemon=True).start()

    options = RunOptions(
        scenario=loaded,
        scenario_file=path,
        decider=Decider.NSA if Decider.NSA in loaded.deciders else Decider.SOAP,
        out=_OUT / f"screenshots-{loaded.name}",
        prefix=args.prefix,
        console=True,
        console_hold_s=HOLD_S,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    # The hold ends early once the pictures are taken (Ctrl-C's path: a KeyboardInterrupt
    # inside the hold ends only the hold).
    main_thread = threading.get_ident()

    def end_hold_when_done() -> None:
        while not (done or errors) or not holding:
            time.sleep(0.2)
        import _thread

        if threading.get_ident() != main_thread:
            _thread.interrupt_main()

    threading.Thread(target=end_hold_when_done, daemon=True).start()
    data = runner.run(options, say=say)
    if errors:
        print(f"screenshots failed: {errors[0]!r}", file=sys.stderr)
        return 1
    if data.failure:
        print(f"the run failed: {data.failure}", file=sys.stderr)
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
