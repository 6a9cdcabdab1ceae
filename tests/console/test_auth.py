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


def throttled(clock: list[float], **limits: float) -> Authenticator:
    from services.console.config import LoginLimits

    users = {
        "alice": UserConfig(password_hash=hash_password("pw", iterations=1000)),
        "bob": UserConfig(password_hash=hash_password("pw2", iterations=1000)),
    }
    return Authenticator(
        users, ttl_s=600, clock=lambda: clock[0], limits=LoginLimits.model_validate(limits)
    )


def test_an_address_with_too_many_failures_waits_without_any_password_check() -> None:
    clock = [1000.0]
    auth = throttled(clock, failures_per_address=3, failures_per_user=100, window_s=60)
    session = auth.open("alice", Role.VIEWER)  # opened before: never affected
    for attempt in range(3):
        clock[0] += 1
        assert auth.login("alice", f"guess-{attempt}", "192.0.2.7").role is None
    checks = auth.checks
    clock[0] += 1
    refused = auth.login("alice", "pw", "192.0.2.7")  # even the right password
    assert refused.role is None
    assert refused.retry_after_s == pytest.approx(60 - 3)  # until the first failure is 60 s old
    assert auth.checks == checks, "refused unchecked: no PBKDF2"
    assert auth.session(session) is not None
    assert auth.login("alice", "pw", "198.51.100.1").role is Role.VIEWER  # another address
    clock[0] += 58  # the first failure is now over 60 s old
    assert auth.login("alice", "pw", "192.0.2.7").role is Role.VIEWER


def test_a_user_guessed_at_from_many_addresses_waits_and_others_do_not() -> None:
    clock = [0.0]
    auth = throttled(clock, failures_per_address=100, failures_per_user=4, window_s=300)
    for n in range(4):
        assert auth.login("alice", f"guess-{n}", f"192.0.2.{n}").role is None
    late = auth.login("alice", "pw", "203.0.113.9")
    assert late.role is None
    assert late.retry_after_s is not None
    assert auth.login("bob", "pw2", "203.0.113.9").role is Role.VIEWER


def test_an_unknown_name_is_throttled_like_a_known_one() -> None:
    clock = [0.0]
    auth = throttled(clock, failures_per_address=100, failures_per_user=2, window_s=60)
    answers = []
    for user in ("alice", "nobody"):
        for n in range(3):
            answers.append((user, auth.login(user, f"x{n}", f"192.0.2.{n}").retry_after_s))
    assert [wait is not None for _, wait in answers] == [False, False, True] * 2


def test_the_same_wrong_password_again_costs_no_check_but_counts() -> None:
    clock = [0.0]
    auth = throttled(clock, failures_per_address=3, failures_per_user=100, window_s=60)
    assert auth.login("alice", "wrong", "192.0.2.1").role is None
    checks = auth.checks
    assert auth.login("alice", "wrong", "192.0.2.1").role is None
    assert auth.checks == checks
    assert auth.login("alice", "wrong", "192.0.2.1").role is None
    assert auth.login("alice", "pw", "192.0.2.1").retry_after_s is not None  # three failures
