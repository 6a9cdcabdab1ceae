"""The console's web side: login, the fleet and router pages, their JSON and event streams.

Every page, JSON document and stream needs a session (`auth`); without one a page redirects
to the login form and the rest answers 401. Static files (CSS, the scripts, uPlot from
`static/vendor`, installed by scripts/setup.sh) are served by the console itself, so the
pages work with no internet access.

Live updates are server-sent events, one stream per page. A stream looks at the picture every
`POLL_S` and sends at most one event per interval (`fleet_interval_s`, `router_interval_s`)
with everything that changed since its last one: the fleet stream the changed rows and alert
events, the router stream the router's view with only the new samples. So a fleet of 1,000
routers reporting every second costs a browser one event a second, and a quiet fleet shows a
change within `POLL_S`. On a router's page a change of state (a link, an alert, a binding, a
mismatch: what its fleet row shows) does not wait for the interval its metrics are held to,
nor for the next poll: the thread feeding the picture wakes the stream (`Picture.watch`) and
the change goes out at once, unless the stream sent another such change less than
`URGENT_GAP_S` ago: a link flapping without end costs that page five events a second beside
its metrics' two.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import math
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from services.console.auth import LOGIN_COOKIE, SESSION_COOKIE, Authenticator, Session, same_token
from services.console.config import ConsoleSettings, Role
from services.console.metrics import ConsoleMetrics
from services.console.picture import FleetCursor, Picture
from services.contracts.messages import PIN_MAX_S, PinRequest

#: Sends an operator's pin request on the bus; False when it could not be sent.
PinSender = Callable[[PinRequest], bool]
#: The duration a pin form proposes (seconds).
DEFAULT_PIN_S = 600

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
#: Where `npm install` in static/vendor puts uPlot (scripts/setup.sh).
UPLOT_DIR = STATIC_DIR / "vendor" / "node_modules" / "uplot" / "dist"
POLL_S = 0.1
#: The least time between two events of a router stream when a state changed (see above).
URGENT_GAP_S = 0.2
#: Password checks at once (each is ~0.5 s of PBKDF2): a burst of logins queues instead of
#: taking every core.
LOGIN_CHECKS = 2
KEEPALIVE_S = 15.0
_MAX_FORM_BYTES = 4096
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def make_app(
    settings: ConsoleSettings,
    picture: Picture,
    auth: Authenticator,
    metrics: ConsoleMetrics,
    pin: PinSender | None = None,
) -> Starlette:
    """The ASGI app (served by uvicorn in the service, by TestClient in tests); `pin` sends
    operators' pin requests (None: the console cannot pin)."""
    web = _Web(settings, picture, auth, metrics, pin)
    if not UPLOT_DIR.is_dir():
        log.warning("uPlot is not installed in %s (bash scripts/setup.sh): no charts", UPLOT_DIR)
    routes: list[BaseRoute] = [
        Route("/login", web.login_form, methods=["GET"]),
        Route("/login", web.login, methods=["POST"]),
        Route("/logout", web.logout, methods=["POST"]),
        Route("/", web.fleet_page),
        Route("/mr/{mr}", web.router_page),
        Route("/mr/{mr}/pin", web.pin, methods=["POST"]),
        Route("/api/fleet", web.fleet_json),
        Route("/api/mr/{mr}", web.router_json),
        Route("/events/fleet", web.fleet_events),
        Route("/events/mr/{mr}", web.router_events),
        Route("/healthz", web.health),
    ]
    if UPLOT_DIR.is_dir():
        routes.append(Mount("/static/uplot", StaticFiles(directory=UPLOT_DIR)))
    routes.append(Mount("/static", StaticFiles(directory=STATIC_DIR / "app")))
    return Starlette(routes=routes)


class _Web:
    def __init__(
        self,
        settings: ConsoleSettings,
        picture: Picture,
        auth: Authenticator,
        metrics: ConsoleMetrics,
        pin: PinSender | None = None,
    ) -> None:
        self.settings = settings
        self.picture = picture
        self.auth = auth
        self.metrics = metrics
        self.send_pin = pin
        self._checks = asyncio.Semaphore(LOGIN_CHECKS)

    # --- sessions ------------------------------------------------------------------------

    def _session(self, request: Request) -> Session | None:
        return self.auth.session(request.cookies.get(SESSION_COOKIE))

    def _cookie(self, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/",
            httponly=True,
            samesite="strict",
            secure=self.settings.secure_cookies,
        )

    async def _form(self, request: Request) -> dict[str, str]:
        body = await request.body()
        if len(body) > _MAX_FORM_BYTES:
            return {}
        try:
            fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=8)
        except ValueError:  # more fields than any form of ours has
            return {}
        return {k: v[0] for k, v in fields.items() if v}

    # --- login ---------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        failed = request.query_params.get("failed") == "1"
        return self._login_page(
            "Wrong user or password." if failed else None, 401 if failed else 200
        )

    def _login_page(
        self, error: str | None, status: int, headers: dict[str, str] | None = None
    ) -> Response:
        token = secrets.token_urlsafe(32)
        response = _page("Log in", _login_body(token, error), status=status)
        response.headers.update(headers or {})
        self._cookie(response, LOGIN_COOKIE, token, 600)
        return response

    async def login(self, request: Request) -> Response:
        form = await self._form(request)
        if not same_token(form.get("csrf"), request.cookies.get(LOGIN_COOKIE)):
            return _forbidden("the login form expired or did not come from this console")
        user, password = form.get("user", ""), form.get("password", "")
        address = request.client.host if request.client is not None else ""
        async with self._checks:
            result = await run_in_threadpool(self.auth.login, user, password, address)
        role = result.role
        if result.retry_after_s is not None:
            wait = max(1, math.ceil(result.retry_after_s))
            log.warning("console login throttled for user %r from %s", user[:64], address)
            self.metrics.logins.labels("throttled").inc()
            return self._login_page(
                f"Too many failed logins: try again in {wait} s.",
                429,
                {"Retry-After": str(wait)},
            )
        if role is None:
            log.warning("console login refused for user %r from %s", user[:64], address)
            self.metrics.logins.labels("refused").inc()
            return RedirectResponse("/login?failed=1", status_code=303)
        self.metrics.logins.labels("accepted").inc()
        log.info("console login: %s (%s)", user, role.value)
        response = RedirectResponse("/", status_code=303)
        self._cookie(
            response, SESSION_COOKIE, self.auth.open(user, role), int(self.settings.session_ttl_s)
        )
        response.delete_cookie(LOGIN_COOKIE, path="/")
        return response

    async def logout(self, request: Request) -> Response:
        session = self._session(request)
        form = await self._form(request)
        if session is None or not same_token(form.get("csrf"), session.csrf):
            return _forbidden("no session, or the form did not come from this console")
        self.auth.close(request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # --- pages ---------------------------------------------------------------------------

    async def fleet_page(self, request: Request) -> Response:
        session = self._session(request)
        if session is None:
            return RedirectResponse("/login", status_code=303)
        return _page("Fleet", _fleet_body(session), script="fleet.js", session=session)

    async def router_page(self, request: Request) -> Response:
        session = self._session(request)
        if session is None:
            return RedirectResponse("/login", status_code=303)
        mr = request.path_params["mr"]
        body = _router_body(mr, session)
        if session.role is Role.OPERATOR and self.send_pin is not None:
            sent = request.query_params.get("sent")
            body += _pin_forms(mr, session, self.picture.router(mr, 0, None), sent)
        return _page(f"Mobile router {mr}", body, script="router.js", session=session)

    # --- operator actions ----------------------------------------------------------------

    async def pin(self, request: Request) -> Response:
        """Pin a class of the router to a BID for a time, or release it: operators only,
        with the session's CSRF token; the user is the session's, never the form's. The
        request goes on the bus; the NSA owning the router checks, applies and audits it."""
        session = self._session(request)
        form = await self._form(request)
        if session is None or not same_token(form.get("csrf"), session.csrf):
            return _forbidden("no session, or the form did not come from this console")
        if session.role is not Role.OPERATOR:
            log.warning("console pin refused: %s is a %s", session.user, session.role.value)
            return _forbidden(f"{session.role.value}s cannot pin; operators can")
        if self.send_pin is None:
            return PlainTextResponse("503: this console cannot pin\n", status_code=503)
        mr = request.path_params["mr"]
        pin = self._pin_request(form, mr, session)
        if isinstance(pin, Response):
            return pin
        release = pin.release
        if not self.send_pin(pin):
            return PlainTextResponse(
                "503: the broker is not reachable; nothing was sent\n", status_code=503
            )
        what = "release" if release else f"pin to BID {pin.bid} for {pin.duration_s} s"
        log.info("console: %s asks %s of %s class %s", session.user, what, mr, pin.class_name)
        action = "release" if release else "pin"
        return RedirectResponse(f"/mr/{quote(mr, safe='')}?sent={action}", status_code=303)

    def _pin_request(
        self, form: dict[str, str], mr: str, session: Session
    ) -> PinRequest | Response:
        """The request a pin form makes, or the 400 answer naming the fields at fault."""
        release = form.get("action") == "release"
        missing = [k for k in ("bid", "duration_s") if not release and _int(form.get(k)) is None]
        if missing:
            return _bad_request(f"{', '.join(missing)} must be a whole number")
        try:
            return PinRequest(
                sender=self.settings.name,
                mobile_router=mr,
                class_name=form.get("class", ""),
                bid=None if release else _int(form.get("bid")),
                release=release,
                duration_s=None if release else _int(form.get("duration_s")),
                user=session.user,
                reason=form.get("reason", ""),
            )
        except ValidationError as exc:
            fields = sorted({".".join(str(p) for p in e["loc"]) or "form" for e in exc.errors()})
            return _bad_request(f"check {', '.join(fields)}")

    # --- JSON ----------------------------------------------------------------------------

    async def fleet_json(self, request: Request) -> Response:
        if self._session(request) is None:
            return _unauthorized()
        return _json(self.picture.fleet(FleetCursor()))

    async def router_json(self, request: Request) -> Response:
        if self._session(request) is None:
            return _unauthorized()
        view = self.picture.router(request.path_params["mr"], 0, None)
        if view is None:
            return _json({"error": "no such mobile router"}, status=404)
        return _json(view)

    async def health(self, request: Request) -> Response:
        return PlainTextResponse("ok\n")

    # --- event streams -------------------------------------------------------------------

    async def fleet_events(self, request: Request) -> Response:
        if self._session(request) is None:
            return _unauthorized()
        cursor = FleetCursor()

        def next_event() -> tuple[str, dict[str, Any]] | None:
            event = self.picture.fleet(cursor)
            return None if event is None else ("fleet", event)

        return self._stream(request, next_event, self.settings.fleet_interval_s)

    async def router_events(self, request: Request) -> Response:
        if self._session(request) is None:
            return _unauthorized()
        mr = request.path_params["mr"]
        sent = {"revision": 0, "row": 0}
        after: list[float | None] = [None]

        def next_event() -> tuple[str, dict[str, Any]] | None:
            view = self.picture.router(mr, sent["revision"], after[0])
            if view is None:
                return None
            sent["revision"], sent["row"] = view["revision"], view["row_revision"]
            newest = [t for link in view["links"] for t in link["history"]["t"][-1:]]
            view["incremental"] = after[0] is not None
            if newest:
                after[0] = max([*newest, after[0] or 0.0])
            return "router", view

        def urgent() -> bool:
            return self.picture.row_revision(mr) > sent["row"]

        def watch(wake: Callable[[], None]) -> Callable[[], None]:
            return self.picture.watch(mr, wake)

        return self._stream(request, next_event, self.settings.router_interval_s, urgent, watch)

    def _stream(
        self,
        request: Request,
        next_event: Callable[[], tuple[str, dict[str, Any]] | None],
        interval_s: float,
        urgent: Callable[[], bool] | None = None,
        watch: Callable[[Callable[[], None]], Callable[[], None]] | None = None,
    ) -> Response:
        """The event stream: an event when one is due (see the module's docstring); `watch`
        registers a wake-up for urgent changes and returns its undoing."""
        cookie = request.cookies.get(SESSION_COOKIE)

        async def events() -> AsyncIterator[str]:
            loop = asyncio.get_running_loop()
            started = last_sent = last_any = loop.time()
            last_sent -= interval_s
            last_urgent = last_sent
            woken = asyncio.Event()

            def wake() -> None:  # the feeding thread's: schedules, never touches the Event
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(woken.set)

            unwatch = None if watch is None else watch(wake)
            self.metrics.sse_clients.inc()
            try:
                yield "retry: 2000\n\n"
                while loop.time() - started < self.settings.stream_max_s:
                    woken.clear()  # before looking: a change from now on wakes the wait below
                    if self.auth.session(cookie) is None:
                        yield "event: logout\ndata: {}\n\n"
                        return
                    now = loop.time()
                    pressing = urgent is not None and urgent()
                    gap = last_urgent + URGENT_GAP_S - now
                    if now - last_sent >= interval_s or (pressing and gap <= 0):
                        found = next_event()
                        if found is not None:
                            kind, data = found
                            text = json.dumps(data, separators=(",", ":"))
                            self.metrics.events_sent.labels(kind).inc()
                            yield f"event: {kind}\ndata: {text}\n\n"
                            # The stream's first event (the whole view) starts no gap.
                            if pressing and last_sent > started - interval_s:
                                last_urgent = now
                            last_sent = last_any = now
                            pressing = False
                    if now - last_any >= KEEPALIVE_S:
                        yield ": keepalive\n\n"
                        last_any = now
                    # A change held back by the gap is looked at again once the gap is over.
                    timeout = min(POLL_S, gap) if pressing and gap > 0 else POLL_S
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(woken.wait(), timeout)
            finally:
                if unwatch is not None:
                    unwatch()
                self.metrics.sse_clients.dec()

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={**_SECURITY_HEADERS, "X-Accel-Buffering": "no"},
        )


# --- rendering -----------------------------------------------------------------------------


def _json(data: object, status: int = 200) -> Response:
    return JSONResponse(data, status_code=status, headers=_SECURITY_HEADERS)


def _unauthorized() -> Response:
    return _json({"error": "log in first"}, status=401)


def _forbidden(reason: str) -> Response:
    return PlainTextResponse(
        f"403 Forbidden: {reason}\n", status_code=403, headers=_SECURITY_HEADERS
    )


def _page(
    title: str,
    body: str,
    *,
    script: str | None = None,
    session: Session | None = None,
    status: int = 200,
) -> HTMLResponse:
    e = html.escape
    scripts = ""
    if script is not None:
        scripts = (
            '<script src="/static/uplot/uPlot.iife.min.js"></script>\n'
            '<script src="/static/common.js"></script>\n'
            f'<script src="/static/{e(script)}"></script>'
        )
    header = ""
    if session is not None:
        header = (
            '<header><a href="/" class="brand">multinet console</a>'
            f'<span class="who">{e(session.user)} ({e(session.role.value)})</span>'
            '<form method="post" action="/logout" class="logout">'
            f'<input type="hidden" name="csrf" value="{e(session.csrf)}">'
            '<button type="submit">Log out</button></form>'
            '<span id="live" class="live">connecting</span></header>'
        )
    text = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)} - multinet console</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/uplot/uPlot.min.css">
<link rel="stylesheet" href="/static/console.css">
</head><body>
{header}
<main>{body}</main>
{scripts}
</body></html>
"""
    return HTMLResponse(text, status_code=status, headers=_SECURITY_HEADERS)


def _login_body(token: str, message: str | None) -> str:
    e = html.escape
    error = f'<p class="error" id="login-error">{e(message)}</p>' if message else ""
    return f"""<h1>multinet console</h1>
<form method="post" action="/login" class="login">
{error}
<input type="hidden" name="csrf" value="{e(token)}">
<label>User <input name="user" id="user" autocomplete="username" required></label>
<label>Password <input name="password" id="password" type="password"
 autocomplete="current-password" required></label>
<button type="submit" id="login">Log in</button>
</form>"""


def _fleet_body(session: Session) -> str:
    return """<h1>Fleet</h1>
<section class="totals" id="totals"></section>
<input type="search" id="search" placeholder="Search mobile routers, HAs, alerts" autofocus>
<table class="fleet"><thead><tr>
<th>Mobile router</th><th>HA</th><th>Services</th><th>Links up</th><th>Bindings</th>
<th>Mismatches</th><th>Alerts</th></tr></thead><tbody id="rows"></tbody></table>
<h2>Other nodes</h2><table class="nodes"><thead><tr><th>Node</th><th>Services</th>
<th>Routers</th><th>Alerts</th></tr></thead><tbody id="nodes"></tbody></table>
<h2>Recent alerts</h2><ol id="alerts" class="alerts" reversed></ol>"""


def _bad_request(reason: str) -> Response:
    return PlainTextResponse(
        f"400 Bad Request: {reason}\n", status_code=400, headers=_SECURITY_HEADERS
    )


def _int(value: str | None) -> int | None:
    """A form's whole number, None when absent or not one (the model then names the field)."""
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def _pin_forms(mr: str, session: Session, view: dict[str, Any] | None, sent: str | None) -> str:
    """One form per class: pin to a BID for a time, or release (operators only)."""
    e = html.escape
    classes = [c["class"] for c in (view or {}).get("classes", [])]
    bids = sorted(
        {link["bid"] for link in (view or {}).get("links", [])}
        | {b["bid"] for b in (view or {}).get("bindings", [])}
    )
    note = ""
    if sent in ("pin", "release"):
        note = (
            f'<p class="sent" id="pin-sent">{sent.capitalize()} request sent: the decisions '
            "above show it in force (operator override), the NSA's audit says who and when.</p>"
        )
    action = f"/mr/{e(quote(mr, safe=''))}/pin"
    options = "".join(f'<option value="{b}">BID {b}</option>' for b in bids)
    forms = []
    for name in classes:
        forms.append(
            f'<form method="post" action="{action}" class="pin" data-class="{e(name)}">'
            f'<input type="hidden" name="csrf" value="{e(session.csrf)}">'
            f'<input type="hidden" name="class" value="{e(name)}">'
            f"<strong>{e(name)}</strong> "
            f'<label>BID <select name="bid">{options}</select></label> '
            f'<label>for <input name="duration_s" type="number" min="1" max="{PIN_MAX_S}" '
            f'value="{DEFAULT_PIN_S}"> s</label> '
            '<label>reason <input name="reason" maxlength="200"></label> '
            '<button type="submit" name="action" value="pin">Pin</button> '
            '<button type="submit" name="action" value="release">Release</button></form>'
        )
    if not forms:
        forms.append("<p>No class of this router is known yet (reload when one is).</p>")
    return f'<h2>Operator actions</h2><section id="pins">{note}{"".join(forms)}</section>'


def _router_body(mr: str, session: Session) -> str:
    e = html.escape
    return f"""<h1 id="router" data-mr="{e(mr)}" data-events="/events/mr/{e(quote(mr, safe=""))}">
Mobile router {e(mr)}</h1>
<p id="summary"></p>
<section id="router-alerts"></section>
<h2>Links</h2><div id="links" class="links"></div>
<h2>Packets per link</h2><div id="rates" class="rates"></div>
<ol id="rate-markers" class="markers" reversed></ol>
<h2>Bindings</h2><table><thead><tr><th>BID</th><th>Event</th><th>Care-of address</th>
<th>Pipe</th><th>Lifetime</th><th>Status</th><th>At</th></tr></thead>
<tbody id="bindings"></tbody></table>
<h2>Classes: chosen and enforced</h2><table><thead><tr><th>Class</th><th>NSA chose</th>
<th>HA enforces</th><th>MR enforces</th><th>Operator override</th></tr></thead>
<tbody id="classes"></tbody></table>
<h2>Decisions</h2><div id="decisions"></div>
<h2>Audit of operator actions</h2><table><thead><tr><th>At</th><th>Who</th><th>What</th>
<th>Class</th><th>BID</th><th>Until</th><th>Outcome</th><th>Detail</th></tr></thead>
<tbody id="audits"></tbody></table>"""
