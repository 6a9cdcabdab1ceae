"""Sessions: signed cookies, expiry, a bound on their number, logout."""

from __future__ import annotations

import pytest

from services.console import auth as auth_module
from services.console.auth import Authenticator, same_token
from services.console.config import Role, UserConfig
from services.soap_gateway.passwords import hash_password


def authenticator(clock: list[float]) -> Authenticator:
    users = {"alice": UserConfig(password_hash=hash_password("pw", iterations=1000))}
    return Authenticator(users, ttl_s=60, clock=lambda: clock[0])


def test_check_gives_the_role_only_for_the_right_password() -> None:
    auth = authenticator([0.0])
    assert auth.check("alice", "pw") is Role.VIEWER
    assert auth.check("alice", "pW") is None
    assert auth.check("bob", "pw") is None


def test_a_session_expires_after_its_ttl() -> None:
    clock = [100.0]
    auth = authenticator(clock)
    cookie = auth.open("alice", Role.VIEWER)
    session = auth.session(cookie)
    assert session is not None
    assert session.user == "alice"
    clock[0] = 159.9
    assert auth.session(cookie) is not None
    clock[0] = 160.0
    assert auth.session(cookie) is None


def test_a_cookie_of_another_process_or_tampered_names_nothing() -> None:
    clock = [0.0]
    one, other = authenticator(clock), authenticator(clock)
    cookie = one.open("alice", Role.VIEWER)
    token, signature = cookie.split(".")
    assert other.session(cookie) is None  # another key
    assert one.session(f"{token}.{'0' * len(signature)}") is None
    assert one.session(token) is None
    assert one.session(None) is None
    assert one.session(f"{cookie}.x") is None
    one.close(cookie)
    assert one.session(cookie) is None


def test_sessions_are_bounded_oldest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth_module, "MAX_SESSIONS", 3)
    auth = authenticator([0.0])
    cookies = [auth.open("alice", Role.VIEWER) for _ in range(4)]
    assert auth.session(cookies[0]) is None
    assert all(auth.session(c) is not None for c in cookies[1:])


def test_same_token_needs_both() -> None:
    assert same_token("a", "a")
    assert not same_token("a", "b")
    assert not same_token("", "")
    assert not same_token(None, "a")
