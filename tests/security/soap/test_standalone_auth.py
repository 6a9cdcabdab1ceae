"""A standalone worker (`multinet prem run --standalone`) authenticates its SOAP callers like
the gateway, from the `[standalone]` table of its settings file; without callers it serves
anyone and says so loudly at start.

Real daemons (memory back end, each in a namespace of its own), real HTTP clients.
"""

from __future__ import annotations

import base64
import http.client
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.procs import Service, bare_node, gateway_port, prem_config, prem_worker
from tests.security.soap.conftest import PASSWORD, add_standalone_callers, caller_table

pytestmark = pytest.mark.kernel

GET_STATUS = (
    b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
    b'xmlns:g="urn:multinet:soap-gateway:1"><s:Body><g:GetStatus>'
    b"<g:mobile_router>mr1</g:mobile_router></g:GetStatus></s:Body></s:Envelope>"
)


def _status(port: int, user: str | None, password: str = PASSWORD) -> int:
    headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '"GetStatus"'}
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", "/", GET_STATUS, headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


@pytest.fixture
def start_daemon(
    make_netns: Callable[[str], str], tmp_path: Path
) -> Iterator[Callable[[bool], Service]]:
    started: list[Service] = []

    def start(with_callers: bool) -> Service:
        name = f"sa{len(started)}"
        config = prem_config(tmp_path / f"{name}.toml", "unused/v1", backend="memory")
        if with_callers:
            add_standalone_callers(config, caller_table())
        plain = prem_worker(config, bare_node(make_netns(name)), tmp_path / f"{name}.log")
        daemon = Service([*plain.argv, "--standalone", "--soap-listen", "127.0.0.1:0"], plain.log)
        started.append(daemon)
        daemon.start()
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


def test_with_callers_only_they_are_served(start_daemon: Callable[[bool], Service]) -> None:
    daemon = start_daemon(True)
    port = gateway_port(daemon)
    assert _status(port, None) == 401
    assert _status(port, "nsa", "wrong") == 401
    assert _status(port, "nsa") == 200
    log = daemon.text()
    assert "NO AUTHENTICATION" not in log
    assert "from 127.0.0.1 (unauthenticated 'nsa'): Client.Unauthenticated" in log


def test_without_callers_it_warns_loudly_and_serves_anyone(
    start_daemon: Callable[[bool], Service],
) -> None:
    daemon = start_daemon(False)
    port = gateway_port(daemon)
    assert _status(port, None) == 200
    assert "NO AUTHENTICATION: no callers are configured" in daemon.text()


def test_check_config_validates_the_standalone_table(tmp_path: Path) -> None:
    config = prem_config(tmp_path / "prem.toml", "unused/v1", backend="memory")
    text = config.read_text(encoding="utf-8")
    bad = '[standalone]\ncallers = [{ name = "nsa", password_hash = "x", mobile_routers = "*" }]\n'
    config.write_text(bad + text, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "check-config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "standalone.callers.0.password_hash" in done.stderr
