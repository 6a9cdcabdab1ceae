"""Who may call the gateway, and for which mobile routers: HTTP Basic (RFC 7617) and PBKDF2.

The settings hold each caller's name, a password hash (`passwords.PasswordHash`) and the
mobile routers it may address (a list, or "*" for all). The WSGI layer authenticates before
spyne parses anything; the core authorises once the mobile router of a call is known, before
anything is published. With no callers configured, authentication is off (a lab); Basic
credentials are only as safe as the channel, so the gateway warns when callers are configured
without TLS.

`python -m services.soap_gateway.auth hash` reads a password from stdin and prints its hash
for the settings file.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import secrets
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from services.contracts.errors import MultinetError
from services.soap_gateway.config import CallerSettings
from services.soap_gateway.passwords import (
    DEFAULT_ITERATIONS,
    MIN_ITERATIONS,
    PasswordHash,
    hash_password,
)
from services.soap_gateway.throttle import LoginThrottle

REALM = "multinet"
#: How long a login waits for the one password check that may run at a time.
HASH_WAIT_S = 10.0
#: Where the WSGI layer leaves the authenticated `Caller` for the SOAP service.
ENVIRON_KEY = "multinet.caller"


class NotAuthorisedError(MultinetError):
    """An authenticated caller addressed a mobile router it may not (`Client.Unauthorized`)."""

    code = "Client.Unauthorized"

    def __init__(self, caller: str | None, mobile_router: str | None) -> None:
        self.caller = caller
        self.mobile_router = mobile_router
        who = "an unauthenticated caller" if caller is None else f"caller {caller!r}"
        super().__init__(f"{who} may not address mobile router {mobile_router!r}")


@dataclass(frozen=True)
class Caller:
    """An authenticated caller; `mobile_routers` None means every mobile router."""

    name: str
    mobile_routers: frozenset[str] | None

    def may_address(self, mobile_router: str | None) -> bool:
        """Whether this caller may address `mobile_router`."""
        if self.mobile_routers is None:
            return True
        return mobile_router in self.mobile_routers


class Outcome(Enum):
    """How an `Authorization` header was judged."""

    ACCEPTED = "accepted"
    MISSING = "missing"  # no header: a client's usual first try
    INVALID = "invalid"  # malformed, unknown name or wrong password
    THROTTLED = "throttled"  # too many failures from this address: not even checked
    BUSY = "busy"  # no password check could start in time


@dataclass(frozen=True)
class Verdict:
    """The outcome, the caller when accepted, the claimed user-id (for the log) and, when
    throttled or busy, when to try again."""

    outcome: Outcome
    caller: Caller | None = None
    claimed: str | None = None
    retry_after_s: float = 0.0


class Authenticator:
    """Checks `Authorization: Basic ...` headers against the configured callers.

    PBKDF2 is slow on purpose, so a password once verified is remembered as an HMAC under a
    key that lives only in this process; later calls compare that in constant time. Unknown
    names cost a full PBKDF2 too, so the answer's timing does not tell which names exist.

    Wrong passwords cannot hold the CPU: failures are remembered per source address and per
    credentials (`throttle.LoginThrottle`), and only one password check runs at a time, so
    unauthenticated requests use at most one core however many arrive; a verified caller
    never waits for it.
    """

    def __init__(
        self, callers: Iterable[CallerSettings], throttle: LoginThrottle | None = None
    ) -> None:
        self._callers = {
            c.name: (
                PasswordHash.parse(c.password_hash),
                Caller(c.name, None if c.mobile_routers == "*" else frozenset(c.mobile_routers)),
            )
            for c in callers
        }
        # Unknown names are checked against this, at the cost of the costliest real hash.
        self._dummy = PasswordHash(
            max((h.iterations for h, _ in self._callers.values()), default=MIN_ITERATIONS),
            secrets.token_bytes(16),
            secrets.token_bytes(32),
        )
        self._key = secrets.token_bytes(32)
        self._verified: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._throttle = throttle or LoginThrottle()
        self._hashing = threading.Semaphore(1)
        #: Password checks (PBKDF2) run so far: what a login costs, for tests and operators.
        self.hashes = 0

    @property
    def enabled(self) -> bool:
        """Whether any caller is configured (with none, every call is let through)."""
        return bool(self._callers)

    def authenticate(self, header: str | None, address: str = "") -> Caller | None:
        """The caller an `Authorization` header proves, or None (missing, malformed, wrong,
        throttled)."""
        return self.check(header, address).caller

    def check(self, header: str | None, address: str, now: float | None = None) -> Verdict:
        """Judge an `Authorization` header sent from `address` (at `now`, monotonic)."""
        credentials = parse_basic(header)
        if credentials is None:
            return Verdict(Outcome.MISSING if header is None else Outcome.INVALID)
        name, password = credentials
        entry = self._callers.get(name)
        mac = hmac.new(self._key, password, hashlib.sha256).digest()
        with self._lock:
            known = self._verified.get(name)
        if entry is not None and known is not None and hmac.compare_digest(known, mac):
            return Verdict(Outcome.ACCEPTED, entry[1], name)
        now = time.monotonic() if now is None else now
        token = hmac.new(self._key, name.encode() + b"\0" + password, hashlib.sha256).digest()
        # Checked before waiting for the password check, and again once it may start: the
        # failures of the requests that waited before it count.
        refused = self._throttled(name, address, token, now)
        if refused is not None:
            return refused
        return self._verify(entry, name, password, mac, (address, token, now))

    def _verify(
        self,
        entry: tuple[PasswordHash, Caller] | None,
        name: str,
        password: bytes,
        mac: bytes,
        failure: tuple[str, bytes, float],
    ) -> Verdict:
        """The PBKDF2 check, one at a time (so logins hold one core at most), recording a
        failure (address, token, time) or remembering a verified password."""
        address, token, now = failure
        if not self._hashing.acquire(timeout=HASH_WAIT_S):
            return Verdict(Outcome.BUSY, None, name, 1.0)
        try:
            refused = self._throttled(name, address, token, now)
            if refused is not None:
                return refused
            self.hashes += 1
            matched = (entry[0] if entry is not None else self._dummy).matches(password)
        finally:
            self._hashing.release()
        with self._lock:
            if entry is None or not matched:
                self._throttle.failed(address, token, now)
                return Verdict(Outcome.INVALID, None, name)
            self._verified[name] = mac
        return Verdict(Outcome.ACCEPTED, entry[1], name)

    def _throttled(self, name: str, address: str, token: bytes, now: float) -> Verdict | None:
        """The refusal that costs no password check, if any: the address is throttled, or
        these very credentials failed a moment ago."""
        with self._lock:
            wait = self._throttle.retry_after(address, now)
            if wait is not None:
                return Verdict(Outcome.THROTTLED, None, name, wait)
            if self._throttle.known_failure(token, now):
                self._throttle.failed(address, token, now)
                return Verdict(Outcome.INVALID, None, name)
        return None


def parse_basic(header: str | None) -> tuple[str, bytes] | None:
    """(user-id, password) from an RFC 7617 `Basic` header value, or None when malformed."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token.strip():
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon:
        return None
    return _text(user).decode("utf-8"), _text(password)


def _text(raw: bytes) -> bytes:
    """UTF-8 bytes of a user-id or password. RFC 7617 leaves the charset to the client: most
    send UTF-8, but some (python-requests) send ISO-8859-1, which is read as such."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("iso-8859-1").encode("utf-8")
    return raw


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.soap_gateway.auth",
        description="Tools for the gateway's caller table.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    hashing = commands.add_parser(
        "hash", help="read a password from stdin (one line) and print its password_hash"
    )
    hashing.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS)
    args = parser.parse_args(argv)
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("no password on stdin", file=sys.stderr)
        return 2
    try:
        print(hash_password(password, iterations=args.iterations))
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_main())
