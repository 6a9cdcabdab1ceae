"""The console's web app (Starlette TestClient): login, sessions, CSRF, pages, JSON, streams."""

from __future__ import annotations

import threading
import time
from typing import Any

from starlette.testclient import TestClient

from services.console.auth import SESSION_COOKIE
from services.console.picture import Picture
from services.console.web import make_app
from tests.console import messages as m
from tests.console.webapp import PASSWORDS, csrf_of, events, log_in, parts, settings


def client() -> tuple[TestClient, Picture]:
    config, picture, auth, metrics = parts()
    return TestClient(make_app(config, picture, auth, metrics)), picture


def test_nothing_without_a_session() -> None:
    c, _ = client()
    for path in ("/", "/mr/mr1"):
        response = c.get(path, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == "/login"
    for path in ("/api/fleet", "/api/mr/mr1", "/events/fleet", "/events/mr/mr1"):
        assert c.get(path).status_code == 401, path


def test_a_forged_session_cookie_is_refused() -> None:
    c, _ = client()
    log_in(c)
    token = c.cookies[SESSION_COOKIE]
    c.cookies.set(SESSION_COOKIE, token[:-2] + ("00" if not token.endswith("00") else "11"))
    assert c.get("/api/fleet").status_code == 401


def test_login_sets_a_strict_httponly_session_cookie() -> None:
    c, _ = client()
    form = c.get("/login")
    assert form.status_code == 200
    response = c.post(
        "/login",
        data={"user": "alice", "password": PASSWORDS["alice"], "csrf": csrf_of(form.text)},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    cookie = next(
        v
        for k, v in response.headers.multi_items()
        if k == "set-cookie" and v.startswith(SESSION_COOKIE)
    )
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/" in cookie
    page = c.get("/")
    assert page.status_code == 200
    assert "alice (viewer)" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]


def test_a_wrong_password_or_user_is_refused() -> None:
    c, _ = client()
    for user, password in (("alice", "nope"), ("mallory", "alice-secret"), ("alice", "")):
        form = c.get("/login")
        response = c.post(
            "/login",
            data={"user": user, "password": password, "csrf": csrf_of(form.text)},
            follow_redirects=False,
        )
        assert response.status_code == 303
        assert response.headers["location"] == "/login?failed=1"
        assert SESSION_COOKIE not in c.cookies
    assert c.get("/login?failed=1").status_code == 401
    assert c.get("/api/fleet").status_code == 401


def test_a_login_post_without_its_csrf_token_is_refused() -> None:
    c, _ = client()
    c.get("/login")
    for data in (
        {"user": "alice", "password": PASSWORDS["alice"]},
        {"user": "alice", "password": PASSWORDS["alice"], "csrf": "forged"},
    ):
        response = c.post("/login", data=data, follow_redirects=False)
        assert response.status_code == 403
    assert SESSION_COOKIE not in c.cookies


def test_logout_needs_the_sessions_csrf_token_and_ends_the_session() -> None:
    c, _ = client()
    log_in(c)
    page = c.get("/")
    assert c.post("/logout", data={"csrf": "forged"}, follow_redirects=False).status_code == 403
    assert c.post("/logout", data={}, follow_redirects=False).status_code == 403
    assert c.get("/api/fleet").status_code == 200
    cookie = c.cookies[SESSION_COOKIE]
    response = c.post("/logout", data={"csrf": csrf_of(page.text)}, follow_redirects=False)
    assert response.status_code == 303
    c.cookies.set(SESSION_COOKIE, cookie)  # even the old cookie, replayed, names nothing now
    assert c.get("/api/fleet").status_code == 401


def test_a_viewer_sees_pages_json_and_streams() -> None:
    c, picture = client()
    log_in(c)
    for topic, message in (
        m.state("mr1", "wlan0", 1, up=True),
        m.metrics("mr1", "wlan0", 1, rtt_ms=33.0),
        m.decision("mr1", {"video": (1,)}),
        m.presence("ha1", "prem", True),
    ):
        picture.feed(topic, message)
    assert "Fleet" in c.get("/").text
    page = c.get("/mr/mr1")
    assert page.status_code == 200
    assert 'data-mr="mr1"' in page.text
    fleet = c.get("/api/fleet").json()
    assert [r["mr"] for r in fleet["rows"]] == ["mr1"]
    router = c.get("/api/mr/mr1").json()
    assert router["links"][0]["latest"]["rtt_ms"] == 33.0
    assert router["classes"][0]["chosen"] == [1]
    assert c.get("/api/mr/nobody").status_code == 404

    stream = c.get("/events/fleet")
    assert stream.headers["content-type"].startswith("text/event-stream")
    (first, *_) = events(stream.text)
    assert first[0] == "fleet"
    assert first[1]["full"] is True
    assert [r["mr"] for r in first[1]["rows"]] == ["mr1"]
    assert [n["node"] for n in first[1]["nodes"]] == ["ha1"]

    (name, view), *_ = events(c.get("/events/mr/mr1").text)
    assert name == "router"
    assert view["mr"] == "mr1"
    assert view["incremental"] is False
    assert view["links"][0]["history"]["rtt_ms"] == [33.0]


def test_static_files_are_served_without_a_session() -> None:
    c, _ = client()
    for path in (
        "/static/console.css",
        "/static/common.js",
        "/static/fleet.js",
        "/static/router.js",
    ):
        assert c.get(path).status_code == 200, path


def test_a_busy_fleet_is_coalesced_into_few_events() -> None:
    config, picture, auth, metrics = parts(
        settings(stream_max_s=1.0, fleet_interval_s=0.25, router_interval_s=0.25)
    )
    c = TestClient(make_app(config, picture, auth, metrics))
    log_in(c)
    routers = [f"mr{i:04d}" for i in range(1000)]
    for mr in routers:
        for interface, bid in (("wlan0", 1), ("lte0", 2), ("nr0", 3)):
            picture.feed(*m.state(mr, interface, bid, up=True))
    stop = threading.Event()
    fed = [0]

    def flap() -> None:  # every router's links at 1 Hz and more, while the stream runs
        up = False
        while not stop.is_set():
            for mr in routers:
                picture.feed(*m.metrics(mr, "wlan0", 1))
                picture.feed(*m.state(mr, "lte0", 2, up=up))
                fed[0] += 2
            up = not up

    feeder = threading.Thread(target=flap)
    feeder.start()
    try:
        fleet = events(c.get("/events/fleet").text)
        router = events(c.get("/events/mr/mr0001").text)
    finally:
        stop.set()
        feeder.join()
    assert fed[0] > 2000
    # 1 s at most one event per 0.25 s: the first (full) and at most four more.
    assert 2 <= len(fleet) <= 5
    assert fleet[0][1]["full"] is True
    assert len(fleet[0][1]["rows"]) == 1000
    assert all(not data["full"] for _, data in fleet[1:])
    assert all(len(data["rows"]) <= 1000 for _, data in fleet[1:])
    # The router's page: its link flaps all the time, a change of state goes out at most
    # every URGENT_GAP_S (0.2 s) instead of every 0.25 s.
    assert 2 <= len(router) <= 6
    assert all(data["mr"] == "mr0001" for _, data in router)


def test_a_state_change_does_not_wait_for_the_router_interval() -> None:
    config, picture, auth, metrics = parts(settings(stream_max_s=1.0, router_interval_s=5.0))
    c = TestClient(make_app(config, picture, auth, metrics))
    log_in(c)
    picture.feed(*m.state("mr1", "wlan0", 1, up=True))

    def later() -> None:
        time.sleep(0.3)
        picture.feed(*m.metrics("mr1", "wlan0", 1, rtt_ms=9.0))  # held back by the interval
        time.sleep(0.2)
        picture.feed(*m.state("mr1", "wlan0", 1, up=False))  # goes out at once, with it

    feeder = threading.Thread(target=later)
    feeder.start()
    try:
        router = events(c.get("/events/mr/mr1").text)
    finally:
        feeder.join()
    assert [data["links"][0]["up"] for _, data in router] == [True, False]
    assert router[1][1]["links"][0]["history"]["rtt_ms"] == [9.0]


def test_too_many_failed_logins_get_429_with_retry_after_then_nothing_is_checked() -> None:
    from services.console.config import LoginLimits

    config, picture, auth, metrics = parts(
        settings(login=LoginLimits(failures_per_address=3, window_s=60))
    )
    c = TestClient(make_app(config, picture, auth, metrics))

    def attempt(password: str) -> Any:
        form = c.get("/login")
        return c.post(
            "/login",
            data={"user": "alice", "password": password, "csrf": csrf_of(form.text)},
            follow_redirects=False,
        )

    for n in range(3):
        assert attempt(f"guess-{n}").status_code == 303
    checks = auth.checks
    response = attempt(PASSWORDS["alice"])
    assert response.status_code == 429
    wait = int(response.headers["retry-after"])
    assert 1 <= wait <= 60
    assert f"try again in {wait} s" in response.text
    assert csrf_of(response.text)  # the form, ready for later
    assert auth.checks == checks
    assert SESSION_COOKIE not in c.cookies
    counted = metrics.registry.get_sample_value
    assert counted("multinet_console_logins_total", {"outcome": "refused"}) == 3
    assert counted("multinet_console_logins_total", {"outcome": "throttled"}) == 1
