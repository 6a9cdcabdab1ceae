"""Who may look at the console: users from the settings, sessions, CSRF tokens.

Passwords are checked against the SOAP gateway's hash form (services/soap_gateway/passwords.py,
PBKDF2-HMAC-SHA256); an unknown user costs the same work as a wrong password, so a login's time
does not say which names exist.

Failed logins are counted as the SOAP gateway counts them (`services.soap_gateway.throttle`,
used as it is): per source address and per user name (known or not, so the refusal says
nothing about which names exist), each within `LoginLimits.window_s`. Past either limit a login
is refused at once, without a password check, until the oldest failure is that old (the page
answers 429 with Retry-After); the same wrong credentials sent again within the window cost a
lookup, not a PBKDF2. An open session is never affected: a guesser can delay a user's next
login, not end the session they have. Behind a reverse proxy every browser has the proxy's
address: the per-address limit then counts everyone's failures together.

A session lives on the server (a random token -> user, role, CSRF token, expiry); the cookie
carries the token and its HMAC under a per-process key, so a forged or truncated cookie is
refused before any lookup, and logging out (or a restart) ends the session for good. Every
POST carries the session's CSRF token in a form field (the login form a token of its own,
double-submitted in a short-lived cookie); cookies are HttpOnly and SameSite=Strict.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from services.console.config import LoginLimits, Role, UserConfig
from services.soap_gateway.passwords import PasswordHash, hash_password
from services.soap_gateway.throttle import LoginThrottle

SESSION_COOKIE = "multinet_console"
LOGIN_COOKIE = "multinet_console_login"
#: Sessions held at once; the oldest go first beyond it.
MAX_SESSIONS = 1000


@dataclass(frozen=True, slots=True)
class Session:
    """One logged-in user."""

    user: str
    role: Role
    csrf: str
    expires: float


@dataclass(frozen=True, slots=True)
class LoginResult:
    """A login attempt's outcome: the role, or None; `retry_after_s` set when it was refused
    without a password check because of earlier failures."""

    role: Role | None
    retry_after_s: float | None = None


class Authenticator:
    """Checks passwords and keeps sessions (thread-safe: logins run in a worker thread)."""

    def __init__(
        self,
        users: Mapping[str, UserConfig],
        *,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
        limits: LoginLimits | None = None,
    ) -> None:
        self._users = {
            name: (PasswordHash.parse(u.password_hash), u.role) for name, u in users.items()
        }
        # The work of a wrong user's check: a hash of the same cost as the users' own.
        iterations = max((h.iterations for h, _ in self._users.values()), default=1000)
        self._decoy = PasswordHash.parse(hash_password(secrets.token_hex(8), iterations=iterations))
        self._key = secrets.token_bytes(32)
        self._ttl_s = ttl_s
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        limits = limits or LoginLimits()
        self._by_address = LoginThrottle(
            max_failures=limits.failures_per_address, window_s=limits.window_s
        )
        self._by_user = LoginThrottle(
            max_failures=limits.failures_per_user, window_s=limits.window_s
        )
        #: Password checks (PBKDF2) run so far: what logins cost, for tests.
        self.checks = 0

    def login(self, user: str, password: str, address: str) -> LoginResult:
        """Check a login from `address`, unless earlier failures say to refuse it unchecked;
        count a failure (slow on purpose: run it off the loop)."""
        now = self._clock()
        token = hmac.new(
            self._key, b"login\0" + user.encode() + b"\0" + password.encode(), hashlib.sha256
        ).digest()
        with self._lock:
            waits = [
                self._by_address.retry_after(address, now),
                self._by_user.retry_after(user, now),
            ]
            wait = max((w for w in waits if w is not None), default=None)
            if wait is not None:
                return LoginResult(None, wait)
            repeated = self._by_address.known_failure(token, now)
            if repeated:
                self._failed(user, address, token, now)
                return LoginResult(None)
        role = self.check(user, password)
        if role is None:
            with self._lock:
                self._failed(user, address, token, now)
        return LoginResult(role)

    def _failed(self, user: str, address: str, token: bytes, now: float) -> None:
        self._by_address.failed(address, token, now)
        self._by_user.failed(user, token, now)

    def check(self, user: str, password: str) -> Role | None:
        """The user's role if the password is right (slow on purpose: run it off the loop)."""
        found = self._users.get(user)
        digest = found[0] if found is not None else self._decoy
        self.checks += 1
        ok = digest.matches(password.encode("utf-8"))
        return found[1] if ok and found is not None else None

    def open(self, user: str, role: Role) -> str:
        """A new session; the cookie value that names it."""
        token = secrets.token_urlsafe(32)
        session = Session(user, role, secrets.token_urlsafe(32), self._clock() + self._ttl_s)
        with self._lock:
            self._sessions[token] = session
            while len(self._sessions) > MAX_SESSIONS:
                del self._sessions[next(iter(self._sessions))]
        return f"{token}.{self._sign(token)}"

    def session(self, cookie: str | None) -> Session | None:
        """The live session a cookie names, None when it names none (or a forged one)."""
        token = self._token(cookie)
        if token is None:
            return None
        with self._lock:
            session = self._sessions.get(token)
            if session is not None and session.expires <= self._clock():
                del self._sessions[token]
                return None
        return session

    def close(self, cookie: str | None) -> None:
        """End the session a cookie names (logout)."""
        token = self._token(cookie)
        if token is not None:
            with self._lock:
                self._sessions.pop(token, None)

    def _token(self, cookie: str | None) -> str | None:
        if not cookie or cookie.count(".") != 1:
            return None
        token, signature = cookie.split(".")
        return token if hmac.compare_digest(signature, self._sign(token)) else None

    def _sign(self, token: str) -> str:
        return hmac.new(self._key, token.encode("ascii", "replace"), hashlib.sha256).hexdigest()


def same_token(given: str | None, expected: str | None) -> bool:
    """Whether a submitted CSRF token is the expected one (constant time, both present)."""
    if not given or not expected:
        return False
    return hmac.compare_digest(
        given.encode("utf-8", "replace"), expected.encode("utf-8", "replace")
    )
