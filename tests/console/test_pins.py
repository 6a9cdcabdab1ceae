"""Operator pins from the console: who may, the CSRF token, what goes on the bus.

The web app with a recording sender (TestClient), and the live console on the test broker:
an operator's form post becomes a `PinRequest` on the router's pin topic carrying the
session's user, whatever the form says.
"""

from __future__ import annotations

import re
import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from starlette.testclient import TestClient

from services.console.picture import Picture
from services.console.web import make_app
from services.contracts.messages import PinRequest, decode
from tests.console import messages as m
from tests.console.conftest import LiveConsole
from tests.console.webapp import csrf_of, log_in, parts


def client(sent: list[PinRequest]) -> tuple[TestClient, Picture]:
    config, picture, auth, metrics = parts()

    def send(request: PinRequest) -> bool:
        sent.append(request)
        return True

    return TestClient(make_app(config, picture, auth, metrics, send)), picture


def known_router(picture: Picture) -> None:
    for name, message in (
        m.metrics("mr1", "wlan0", 1),
        m.metrics("mr1", "lte0", 2),
        m.decision("mr1", {"video": (1,)}),
    ):
        picture.feed(name, message)


def form(page: str, **fields: str) -> dict[str, str]:
    data = {"csrf": csrf_of(page), "class": "video", "bid": "2", "duration_s": "60"}
    data.update(fields)
    return data


def test_an_operator_pins_and_releases_as_the_sessions_user() -> None:
    sent: list[PinRequest] = []
    c, picture = client(sent)
    known_router(picture)
    log_in(c, "bob")
    page = c.get("/mr/mr1").text
    assert 'action="/mr/mr1/pin"' in page
    assert re.search(r'<option value="2">BID 2</option>', page)
    response = c.post(
        "/mr/mr1/pin",
        data=form(page, action="pin", user="mallory", reason="wlan maintenance"),
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/mr/mr1?sent=pin"
    assert "Pin request sent" in c.get("/mr/mr1?sent=pin").text
    [request] = sent
    assert request.user == "bob", "the session's user, never a form field"
    assert (request.mobile_router, request.class_name, request.bid) == ("mr1", "video", 2)
    assert (request.duration_s, request.release, request.reason) == (60, False, "wlan maintenance")
    response = c.post("/mr/mr1/pin", data=form(page, action="release"), follow_redirects=False)
    assert response.status_code == 303
    assert sent[-1].release
    assert sent[-1].bid is None
    assert sent[-1].user == "bob"


def test_a_viewer_cannot_pin_and_sees_no_form() -> None:
    sent: list[PinRequest] = []
    c, picture = client(sent)
    known_router(picture)
    log_in(c, "alice")
    page = c.get("/mr/mr1").text
    assert "/pin" not in page
    response = c.post("/mr/mr1/pin", data=form(page, action="pin"), follow_redirects=False)
    assert response.status_code == 403
    assert "viewers cannot pin" in response.text
    assert sent == []


def test_a_pin_without_the_sessions_csrf_token_is_refused() -> None:
    sent: list[PinRequest] = []
    c, picture = client(sent)
    known_router(picture)
    log_in(c, "bob")
    page = c.get("/mr/mr1").text
    for token in ("forged", ""):
        data = form(page, action="pin", csrf=token)
        assert c.post("/mr/mr1/pin", data=data, follow_redirects=False).status_code == 403
    data = form(page, action="pin")
    del data["csrf"]
    assert c.post("/mr/mr1/pin", data=data, follow_redirects=False).status_code == 403
    assert sent == []


def test_no_session_no_pin() -> None:
    sent: list[PinRequest] = []
    c, _ = client(sent)
    data = {"csrf": "x", "class": "video", "bid": "2", "duration_s": "60"}
    assert c.post("/mr/mr1/pin", data=data, follow_redirects=False).status_code == 403
    assert sent == []


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"duration_s": "0"}, "duration_s"),
        ({"duration_s": "86401"}, "duration_s"),
        ({"duration_s": "soon"}, "duration_s"),
        ({"bid": "0"}, "bid"),
        ({"class": "a b"}, "class_name"),
        ({"reason": "x" * 201}, "reason"),
    ],
)
def test_a_bad_pin_form_is_refused_naming_the_field(fields: dict[str, str], named: str) -> None:
    sent: list[PinRequest] = []
    c, picture = client(sent)
    known_router(picture)
    log_in(c, "bob")
    page = c.get("/mr/mr1").text
    response = c.post("/mr/mr1/pin", data=form(page, action="pin", **fields))
    assert response.status_code == 400
    assert named in response.text
    assert sent == []


@pytest.mark.broker
def test_a_pin_from_the_page_is_on_the_broker_with_the_sessions_user(
    live_console: LiveConsole, broker: tuple[str, int]
) -> None:
    import httpx2

    received: list[PinRequest] = []
    got = threading.Event()

    def on_message(c: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        received.append(decode(PinRequest, bytes(msg.payload)))
        got.set()

    subscribed = threading.Event()
    spy = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    spy.on_message = on_message
    spy.on_subscribe = lambda *args: subscribed.set()
    spy.connect(*broker)
    spy.subscribe(live_console.topics.pins(), qos=1)
    spy.loop_start()
    try:
        assert subscribed.wait(5)
        for name, message in (m.metrics("mr1", "wlan0", 1), m.metrics("mr1", "lte0", 2)):
            live_console.publish(live_console.topics.link_metrics("mr1", name.item), message)
        live_console.publish(
            live_console.topics.decision("mr1"), m.decision("mr1", {"video": (1,)})[1]
        )
        web = httpx2.Client(base_url=live_console.url, timeout=10)
        login = web.get("/login")
        web.post(
            "/login",
            data={"user": "bob", "password": "bob-secret", "csrf": csrf_of(login.text)},
        )
        page = web.get("/mr/mr1").text
        response = web.post("/mr/mr1/pin", data=form(page, action="pin", user="mallory"))
        assert response.status_code == 303, response.text
        assert got.wait(10), "no pin request on the broker"
    finally:
        spy.loop_stop()
        spy.disconnect()
    [request] = received
    assert (request.user, request.mobile_router, request.class_name, request.bid) == (
        "bob",
        "mr1",
        "video",
        2,
    )
