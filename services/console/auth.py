"""Who may look at the console: users from the settings, sessions, CSRF tokens.

Passwords are checked against the SOAP gateway's hash form (services/soap_gateway/passwords.py,
PBKDF2-HMAC-SHA256); an unknown user costs the same work as a wrong password, so a login's time
does not say which names exist.

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

from services.console.config import Role, UserConfig
from services.soap_gateway.passwords import PasswordHash, hash_password

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


class Authenticator:
    """Checks passwords and keeps sessions (thread-safe: logins run in a worker thread)."""

    def __init__(
        self,
        users: Mapping[str, UserConfig],
        *,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
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

    def check(self, user: str, password: str) -> Role | None:
        """The user's role if the password is right (slow on purpose: run it off the loop)."""
        found = self._users.get(user)
        digest = found[0] if found is not None else self._decoy
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
