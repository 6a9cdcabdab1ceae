"""Who may call the gateway, and for which mobile routers: HTTP Basic (RFC 7617) and PBKDF2.

The settings hold each caller's name, a password hash (`pbkdf2_sha256$iterations$salt$hash`,
salt and hash in base64) and the mobile routers it may address (a list, or "*" for all). The
WSGI layer authenticates before spyne parses anything; the core authorises once the mobile
router of a call is known, before anything is published. With no callers configured,
authentication is off (a lab); Basic credentials are only as safe as the channel, so the
gateway warns when callers are configured without TLS.

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
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from services.contracts.errors import MultinetError

if TYPE_CHECKING:
    from services.soap_gateway.config import CallerSettings

SCHEME = "pbkdf2_sha256"
#: OWASP's 2023 figure for PBKDF2-HMAC-SHA256; a verified password is then cached in memory,
#: so only a caller's first call (and every wrong password) pays for it.
DEFAULT_ITERATIONS = 600_000
MIN_ITERATIONS = 1_000
REALM = "multinet"
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


def hash_password(
    password: str, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None
) -> str:
    """The settings-file form of `password`: `pbkdf2_sha256$iterations$salt$hash`."""
    if iterations < MIN_ITERATIONS:
        raise ValueError(f"at least {MIN_ITERATIONS} iterations, not {iterations}")
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return f"{SCHEME}${iterations}${_b64(salt)}${_b64(digest)}"


@dataclass(frozen=True)
class PasswordHash:
    """A parsed password hash."""

    iterations: int
    salt: bytes
    digest: bytes

    @classmethod
    def parse(cls, text: str) -> PasswordHash:
        """Parse `pbkdf2_sha256$iterations$salt$hash`; ValueError says what is wrong."""
        parts = text.split("$")
        if len(parts) != 4 or parts[0] != SCHEME:
            raise ValueError(f"expected {SCHEME}$iterations$salt$hash")
        if not parts[1].isdigit() or int(parts[1]) < MIN_ITERATIONS:
            raise ValueError(f"the iterations must be a number of at least {MIN_ITERATIONS}")
        try:
            salt = base64.b64decode(parts[2], validate=True)
            digest = base64.b64decode(parts[3], validate=True)
        except binascii.Error as exc:
            raise ValueError(f"the salt and hash must be base64: {exc}") from exc
        if len(salt) < 8 or len(digest) != 32:
            raise ValueError("the salt must be at least 8 bytes and the hash 32 bytes")
        return cls(int(parts[1]), salt, digest)

    def matches(self, password: bytes) -> bool:
        """Whether `password` hashes to this digest (compared in constant time)."""
        computed = hashlib.pbkdf2_hmac("sha256", password, self.salt, self.iterations)
        return hmac.compare_digest(computed, self.digest)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class Authenticator:
    """Checks `Authorization: Basic ...` headers against the configured callers.

    PBKDF2 is slow on purpose, so a password once verified is remembered as an HMAC under a
    key that lives only in this process; later calls compare that in constant time. Unknown
    names cost a full PBKDF2 too, so the answer's timing does not tell which names exist.
    """

    def __init__(self, callers: Iterable[CallerSettings]) -> None:
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

    @property
    def enabled(self) -> bool:
        """Whether any caller is configured (with none, every call is let through)."""
        return bool(self._callers)

    def authenticate(self, header: str | None) -> Caller | None:
        """The caller an `Authorization` header proves, or None (missing, malformed, wrong)."""
        credentials = parse_basic(header)
        if credentials is None:
            return None
        name, password = credentials
        entry = self._callers.get(name)
        if entry is None:
            self._dummy.matches(password)
            return None
        stored, caller = entry
        mac = hmac.new(self._key, password, hashlib.sha256).digest()
        with self._lock:
            known = self._verified.get(name)
        if known is not None and hmac.compare_digest(known, mac):
            return caller
        if not stored.matches(password):
            return None
        with self._lock:
            self._verified[name] = mac
        return caller


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
