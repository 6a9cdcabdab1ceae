"""The client-id rules of deploy/mosquitto/clientids, read the way the broker plugin reads them
(deploy/mosquitto/plugin/multinet_clientid.c), so tests can pick the ids a user may use and
check that no id belongs to two users."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Rule:
    """One `pattern` (user None; `%u` is the username) or `clientid` line; a final `*`
    matches any rest."""

    user: str | None
    clientid: str

    def allows(self, user: str, clientid: str) -> bool:
        """Whether this rule lets `user` connect as `clientid`."""
        if self.user is not None and self.user != user:
            return False
        wanted = self.clientid.replace("%u", user) if self.user is None else self.clientid
        if wanted.endswith("*"):
            return clientid.startswith(wanted[:-1])
        return clientid == wanted

    def example(self, user: str) -> str:
        """A concrete id this rule gives `user` (a random rest for a wildcard)."""
        wanted = self.clientid.replace("%u", user) if self.user is None else self.clientid
        if wanted.endswith("*"):
            return f"{wanted[:-1]}test-{uuid.uuid4().hex[:8]}"
        return wanted


def load(path: Path) -> list[Rule]:
    """Every rule of the file, in order."""
    rules: list[Rule] = []
    user: str | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        keyword, value = words
        if keyword == "user":
            user = value
        elif keyword == "pattern":
            rules.append(Rule(None, value))
        else:
            assert keyword == "clientid", line
            rules.append(Rule(user, value))
    return rules


def ids_for(rules: list[Rule], user: str) -> list[str]:
    """The client ids `user` may use, one per rule that applies to it: its own lines first,
    then the patterns."""
    own = [rule.example(user) for rule in rules if rule.user == user]
    return own + [rule.example(user) for rule in rules if rule.user is None]


def allowed(rules: list[Rule], user: str, clientid: str) -> bool:
    """Whether `user` may connect as `clientid`."""
    return any(rule.allows(user, clientid) for rule in rules)
