"""Wrong passwords cannot hold the CPU: failed logins are throttled per source address, the
same wrong credentials are remembered, one password check runs at a time, and a verified
caller is never locked out.

The bookkeeping is tested with a fake clock; the effect on a real gateway process (PBKDF2 at
its production cost, 600,000 rounds) with real HTTP clients: 200 wrong-password requests
cost the gateway a handful of password checks, and a valid caller calling from another
address meanwhile is answered.
"""

from __future__ import annotations

import base64
import http.client
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from services.soap_gateway.auth import Authenticator, Outcome
from services.soap_gateway.config import CallerSettings
from services.soap_gateway.passwords import DEFAULT_ITERATIONS, hash_password
from services.soap_gateway.throttle import LoginThrottle
from tests.faults.procs import Service, gateway_port
from tests.security.soap.conftest import PASSWORD, caller_table, gateway_config

GET_STATUS = (
    b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
    b'xmlns:g="urn:multinet:soap-gateway:1"><s:Body><g:GetStatus>'
    b"<g:mobile_router>mr1</g:mobile_router></g:GetStatus></s:Body></s:Envelope>"
)


def basic(user: str, password: str) -> str:
    """An HTTP Basic `Authorization` value."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def test_an_address_is_throttled_after_too_many_failures_until_the_window_passes() -> None:
    throttle = LoginThrottle(max_failures=3, window_s=60)
    for second in range(3):
        assert throttle.retry_after("10.0.0.1", second) is None
        throttle.failed("10.0.0.1", f"try-{second}".encode(), second)
    assert throttle.retry_after("10.0.0.1", 3) == pytest.approx(57)
    assert throttle.retry_after("10.0.0.2", 3) is None, "other addresses are not affected"
    assert throttle.retry_after("10.0.0.1", 60.5) is None, "the oldest failure aged out"


def test_failed_credentials_are_remembered_for_the_window_and_tables_are_bounded() -> None:
    throttle = LoginThrottle(max_failures=5, window_s=10, max_addresses=2, max_remembered=2)
    throttle.failed("a", b"t1", 0)
    assert throttle.known_failure(b"t1", 5)
    assert not throttle.known_failure(b"t1", 11)
    for index, address in enumerate(("b", "c", "d")):
        throttle.failed(address, f"u{index}".encode(), 1)
    assert len(throttle._failures) == 2
    assert len(throttle._remembered) == 2


def test_wrong_passwords_cost_a_bounded_number_of_password_checks() -> None:
    digest = hash_password(PASSWORD, iterations=1000)
    auth = Authenticator(
        [CallerSettings(name="nsa", password_hash=digest, mobile_routers="*")],
        LoginThrottle(max_failures=5, window_s=60),
    )
    assert auth.check(basic("nsa", "wrong"), "10.0.0.9", 0).outcome is Outcome.INVALID
    assert auth.check(basic("nsa", "wrong"), "10.0.0.9", 1).outcome is Outcome.INVALID
    assert auth.hashes == 1, "the same wrong password is not checked twice"
    for attempt in range(10):
        auth.check(basic("nsa", f"guess-{attempt}"), "10.0.0.9", 2)
    assert auth.hashes == 4, "five failures, then the address is throttled"
    verdict = auth.check(basic("mallory", "x"), "10.0.0.9", 3)
    assert (verdict.outcome, verdict.claimed) == (Outcome.THROTTLED, "mallory")
    assert verdict.retry_after_s == pytest.approx(57), "until the oldest failure is 60 s old"
    # A caller on another address logs in; once verified, not even its address's throttle
    # stops it (an attacker sharing its address cannot lock it out).
    assert auth.check(basic("nsa", PASSWORD), "10.0.0.10", 4).outcome is Outcome.ACCEPTED
    assert auth.check(basic("nsa", PASSWORD), "10.0.0.9", 5).outcome is Outcome.ACCEPTED
    assert auth.hashes == 5


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _post(port: int, authorization: str, source: str = "127.0.0.1") -> int:
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=60, source_address=(source, 0)
    )
    try:
        connection.request(
            "POST",
            "/",
            GET_STATUS,
            {
                "Content-Type": "text/xml; charset=utf-8",
                "SOAPAction": '"GetStatus"',
                "Authorization": authorization,
            },
        )
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


@pytest.mark.broker
def test_200_wrong_passwords_cannot_hold_the_gateway_and_a_valid_caller_is_answered(
    broker: tuple[str, int], topic_root: str, tmp_path: Path
) -> None:
    config = gateway_config(
        tmp_path / "gateway.toml", topic_root, caller_table(iterations=DEFAULT_ITERATIONS)
    )
    argv = [sys.executable, "-m", "services.cli", "soap-gateway", "--config", str(config)]
    gateway = Service([*argv, "--log-json"], tmp_path / "gateway.log")
    gateway.start()
    try:
        port = gateway_port(gateway)
        started = time.process_time()
        hash_password("calibration", iterations=DEFAULT_ITERATIONS)
        one_check_s = time.process_time() - started
        before = _cpu_seconds(gateway.pid)
        statuses: list[int] = []
        lock = threading.Lock()

        def flood(worker: int) -> None:
            for attempt in range(25):
                status = _post(port, basic("nsa", f"wrong-{worker}-{attempt}"))
                with lock:
                    statuses.append(status)

        threads = [threading.Thread(target=flood, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        called = time.monotonic()
        valid = _post(port, basic("nsa", PASSWORD), source="127.0.0.2")
        answered_s = time.monotonic() - called
        for thread in threads:
            thread.join(120)
        spent = _cpu_seconds(gateway.pid) - before
    finally:
        gateway.stop()
    assert valid == 200, "the valid caller, on another address, is answered"
    assert len(statuses) == 200
    assert set(statuses) <= {401, 429}
    assert statuses.count(429) >= 190, "at most a few failures are checked before throttling"
    # Unthrottled, 200 checks would cost 200 x one_check_s of CPU.
    assert spent < 20 * one_check_s, f"{spent:.1f} s of CPU; one check {one_check_s:.2f} s"
    assert answered_s < 20 * one_check_s, f"the valid caller waited {answered_s:.1f} s"
    assert "Client.TooManyFailedLogins: too many failed logins from 127.0.0.1" in gateway.text()
