"""`multinet testbed run --console`: the operator console runs beside the NSA and the gateway,
on the run's broker, and shows the test bed's mobile router while the scenario runs.

The test reads the console's address and one-time login from what the run prints (as a
person would), logs in over HTTP (login form, CSRF token, session cookie) and polls the JSON
endpoints from another thread until the fleet lists mr1 with its links and both bindings.
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from services import netns
from services.testbed import runner, scenario
from services.testbed.addressing import MOBILE_ROUTER, Naming
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
