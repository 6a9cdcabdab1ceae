"""A console app for tests: two users (a viewer and an operator), fast streams."""

from __future__ import annotations

import re
from typing import Any

from starlette.testclient import TestClient

from services.console.auth import Authenticator
from services.console.config import ConsoleSettings, UserConfig
from services.console.core import ConsoleState
from services.console.metrics import ConsoleMetrics
from services.console.picture import Picture
from services.soap_gateway.passwords import hash_password

PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret"}


def settings(**overrides: Any) -> ConsoleSettings:
    users = {
        "alice": UserConfig(password_hash=hash_password(PASSWORDS["alice"], iterations=1000)),
        "bob": UserConfig(
            password_hash=hash_password(PASSWORDS["bob"], iterations=1000), role="operator"
        ),
    }
    values: dict[str, Any] = {
        "users": users,
        "stream_max_s": 0.6,
        "fleet_interval_s": 0.1,
        "router_interval_s": 0.1,
    }
    return ConsoleSettings(**{**values, **overrides})


def parts(
    config: ConsoleSettings | None = None,
) -> tuple[ConsoleSettings, Picture, Authenticator, ConsoleMetrics]:
    config = config or settings()
    picture = Picture(ConsoleState(config.limits()))
    auth = Authenticator(config.users, ttl_s=config.session_ttl_s, limits=config.login)
    return config, picture, auth, ConsoleMetrics(config.name)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, html
    return found.group(1)


def log_in(client: TestClient, user: str = "alice", password: str | None = None) -> TestClient:
    """Log `client` in through the form (raises if the console refuses)."""
    form = client.get("/login")
    response = client.post(
        "/login",
        data={
            "user": user,
            "password": PASSWORDS[user] if password is None else password,
            "csrf": csrf_of(form.text),
        },
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return client


def events(body: str) -> list[tuple[str, Any]]:
    """The (event, data) pairs of an event-stream body, comments and retry lines skipped."""
    import json

    found = []
    for block in body.split("\n\n"):
        name, data = "message", None
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
        if data is not None:
            found.append((name, data))
    return found
