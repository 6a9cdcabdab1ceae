"""Callers and their mobile routers: password hashes, Basic headers, and authorisation in the
core before anything is published."""

from __future__ import annotations

import base64
import subprocess
import sys
from typing import Any

import pytest
from pydantic import ValidationError

from services.soap_gateway.auth import Authenticator, Caller, NotAuthorisedError, parse_basic
from services.soap_gateway.checks import CallRefused, FaultCode
from services.soap_gateway.core import GatewayCore, Outcome
from services.soap_gateway.passwords import PasswordHash, hash_password
from services.soap_gateway.tracker import Tracker
from tests.soap_gateway.helpers import downlink, gateway_settings, uplink
from tests.soap_gateway.test_core import VIDEO, FakeBus

FAST = 1000  # iterations: tests need not pay for a production hash

ROUTERS = [
    {"id": "mr1", "ha_node": "ha1", "mr_node": "mr1"},
    {"id": "mr2", "ha_node": "ha1", "mr_node": "mr2"},
]


def callers() -> list[dict[str, Any]]:
    """alice may address mr1 only, bob every mobile router."""
    return [
        {
            "name": "alice",
            "password_hash": hash_password("wonderland", iterations=FAST),
            "mobile_routers": ["mr1"],
        },
        {
            "name": "bob",
            "password_hash": hash_password("builder:ü", iterations=FAST),
            "mobile_routers": "*",
        },
    ]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_hash_round_trip_and_form() -> None:
    stored = hash_password("secret", iterations=FAST, salt=b"0123456789abcdef")
    scheme, iterations, _, _ = stored.split("$")
    assert (scheme, iterations) == ("pbkdf2_sha256", "1000")
    parsed = PasswordHash.parse(stored)
    assert parsed.matches(b"secret")
    assert not parsed.matches(b"Secret")
    assert hash_password("secret", iterations=FAST) != stored, "a fresh salt each time"
    assert int(hash_password("x").split("$")[1]) >= 600_000


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("md5$1000$abc$def", "expected pbkdf2_sha256"),
        ("pbkdf2_sha256$10$AAAAAAAAAAA=$" + "A" * 44, "at least 1000"),
        ("pbkdf2_sha256$1000$not base64!$" + "A" * 44, "base64"),
        ("pbkdf2_sha256$1000$AAAAAAAAAAA=$AAAA", "32 bytes"),
        ("pbkdf2_sha256$1000$AAAAAAAAAAA=", "expected"),
    ],
)
def test_malformed_hashes_are_refused(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        PasswordHash.parse(text)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (basic("alice", "a:b"), ("alice", b"a:b")),
        ("basic " + base64.b64encode(b"alice:").decode(), ("alice", b"")),
        (None, None),
        ("", None),
        ("Bearer abc", None),
        ("Basic", None),
        ("Basic !!!", None),
        ("Basic " + base64.b64encode(b"no-colon").decode(), None),
        ("Basic " + base64.b64encode(b"\xfc:\xfc").decode(), ("ü", "ü".encode())),
        ("Basic " + base64.b64encode("ü:ü".encode()).decode(), ("ü", "ü".encode())),
    ],
)
def test_basic_header_parsing(header: str | None, expected: tuple[str, bytes] | None) -> None:
    assert parse_basic(header) == expected


def test_authenticator_knows_only_configured_callers_and_their_passwords() -> None:
    settings = gateway_settings(mobile_routers=ROUTERS, callers=callers())
    auth = Authenticator(settings.callers)
    assert auth.enabled
    alice = auth.authenticate(basic("alice", "wonderland"))
    assert alice == Caller("alice", frozenset({"mr1"}))
    assert auth.authenticate(basic("alice", "wonderland")) == alice, "the cached path"
    assert auth.authenticate(basic("alice", "wonderlanD")) is None, "not after caching either"
    assert auth.authenticate(basic("bob", "builder:ü")) == Caller("bob", None)
    assert auth.authenticate(basic("mallory", "wonderland")) is None
    assert auth.authenticate(None) is None
    assert not Authenticator(()).enabled


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"callers": [{**callers()[0], "mobile_routers": ["mr9"]}]}, "does not serve"),
        ({"callers": [callers()[0], callers()[0]]}, "declared twice"),
        ({"callers": [{**callers()[0], "password_hash": "plain"}]}, "expected pbkdf2_sha256"),
        ({"callers": [{**callers()[0], "name": "a:b"}]}, "pattern"),
        ({"callers": [{**callers()[0], "mobile_routers": "all"}]}, "mobile_routers"),
        ({"callers": [{**callers()[0], "password": "x"}]}, "password"),
        ({"tls_cert": "/etc/cert.pem"}, "tls_cert and tls_key go together"),
    ],
)
def test_caller_and_tls_settings_are_validated(change: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        gateway_settings(mobile_routers=ROUTERS, **change)


def _core() -> tuple[GatewayCore, FakeBus]:
    tracker = Tracker()
    bus = FakeBus(tracker)
    settings = gateway_settings(mobile_routers=ROUTERS, callers=callers())
    return GatewayCore(settings, tracker, bus), bus


ALICE = Caller("alice", frozenset({"mr1"}))


def test_a_caller_reaches_only_its_mobile_routers_and_nothing_else_is_published() -> None:
    core, bus = _core()
    with pytest.raises(NotAuthorisedError, match="caller 'alice' may not address mobile router"):
        core.deliver(
            "install",
            "mr2",
            downlink(1, VIDEO),
            uplink(1, VIDEO).replace('"mr1"', '"mr2"'),
            caller=ALICE,
        )
    with pytest.raises(NotAuthorisedError, match="'mr2'"):
        core.status("mr2", caller=ALICE)
    # Unauthorised comes first: a restricted caller does not learn which routers exist.
    with pytest.raises(NotAuthorisedError, match="'mr7'"):
        core.deliver("install", "mr7", downlink(1, VIDEO), uplink(1, VIDEO), caller=ALICE)
    assert bus.published == []
    outcomes = core.deliver("install", "mr1", downlink(1, VIDEO), uplink(1, VIDEO), caller=ALICE)
    assert [o.outcome for o in outcomes] == [Outcome.APPLIED, Outcome.APPLIED]
    assert bus.published == ["ha1", "mr1"]
    assert core.status("mr1", caller=ALICE)[0].view.version == 1


def test_with_callers_a_call_without_a_caller_is_refused() -> None:
    core, bus = _core()
    with pytest.raises(NotAuthorisedError, match="an unauthenticated caller"):
        core.deliver("install", "mr1", downlink(1, VIDEO), uplink(1, VIDEO))
    with pytest.raises(NotAuthorisedError):
        core.status("mr1")
    assert bus.published == []


def test_a_caller_for_every_router_still_gets_unknown_router_faults() -> None:
    core, bus = _core()
    with pytest.raises(CallRefused) as info:
        core.status("mr7", caller=Caller("bob", None))
    assert info.value.code == FaultCode.UNKNOWN_MOBILE_ROUTER
    assert bus.published == []


def test_without_callers_authentication_is_off() -> None:
    tracker = Tracker()
    bus = FakeBus(tracker)
    core = GatewayCore(gateway_settings(), tracker, bus)
    outcomes = core.deliver("install", "mr1", downlink(1, VIDEO), uplink(1, VIDEO))
    assert [o.outcome for o in outcomes] == [Outcome.APPLIED, Outcome.APPLIED]


def test_hash_command_reads_stdin_and_prints_a_usable_hash() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "services.soap_gateway.auth", "hash", "--iterations", "2000"],
        input="s3cret pass\n",
        capture_output=True,
        text=True,
        check=True,
    )
    stored = done.stdout.strip()
    assert stored.startswith("pbkdf2_sha256$2000$")
    assert PasswordHash.parse(stored).matches(b"s3cret pass")
    empty = subprocess.run(
        [sys.executable, "-m", "services.soap_gateway.auth", "hash"],
        input="",
        capture_output=True,
        text=True,
        check=False,
    )
    assert empty.returncode == 2
    assert "no password" in empty.stderr
