"""Password hashes of SOAP callers: `pbkdf2_sha256$iterations$salt$hash` (salt and hash in
base64), as the `callers` tables of the gateway and of a standalone PREM daemon hold them.

Its own module because both the settings (which validate a hash when loaded) and the
authenticator (which checks passwords against it) need it, and neither should import the other
for it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

SCHEME = "pbkdf2_sha256"
#: OWASP's 2023 figure for PBKDF2-HMAC-SHA256; a verified password is then cached in memory,
#: so only a caller's first call (and every wrong password) pays for it.
DEFAULT_ITERATIONS = 600_000
MIN_ITERATIONS = 1_000


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
