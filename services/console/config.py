"""Settings of the operator console (the `[console]` table): where it listens, who may log in,
how much it remembers and how often it updates a page.

Users carry a role (viewer, operator) and a password hash in the SOAP gateway's form
(`pbkdf2_sha256$iterations$salt$hash`, services/soap_gateway/passwords.py); make one with
`multinet console hash-password`.
"""

from __future__ import annotations

import dataclasses
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.console.core import Limits
from services.contracts.policy import NodeId
from services.contracts.settings import ListenAddress
from services.soap_gateway.passwords import PasswordHash


class Role(StrEnum):
    """What a user may do: look (viewer), and act (operator: pin a class to a BID, release it)."""

    VIEWER = "viewer"
    OPERATOR = "operator"


class UserConfig(BaseModel):
    """One console user."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    password_hash: str
    role: Role = Role.VIEWER

    @field_validator("password_hash")
    @classmethod
    def _parses(cls, value: str) -> str:
        PasswordHash.parse(value)
        return value


class HistoryConfig(BaseModel):
    """How much the console keeps (per router, per node, in all)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    routers: int = Field(default=5000, ge=1, le=100_000)
    samples: int = Field(default=300, ge=10, le=3600, description="per link, for sparklines")
    decisions: int = Field(default=10, ge=1, le=100)
    alert_log: int = Field(default=200, ge=10, le=10_000)
    dead_letter_hold_s: float = Field(default=300.0, gt=0)

    def limits(self) -> Limits:
        """The core's bounds."""
        return Limits(
            routers=self.routers,
            nodes=self.routers * 2,
            history=self.samples,
            decisions=self.decisions,
            log=self.alert_log,
            dead_letter_hold_s=self.dead_letter_hold_s,
        )


class LoginLimits(BaseModel):
    """How many failed logins the console takes before it stops checking passwords for a
    while (services/soap_gateway/throttle.py keeps the count): per source address, and per
    user name whatever the address (a guesser spread over many addresses)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    failures_per_address: int = Field(default=5, ge=1, le=1000)
    failures_per_user: int = Field(default=20, ge=1, le=10_000)
    window_s: float = Field(
        default=60.0, gt=0, le=86_400, description="failures older than this are forgotten"
    )


class ConsoleSettings(BaseModel):
    """Validated settings of one console."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: NodeId = Field(default="console", description="its node name on the bus (presence)")
    listen: ListenAddress = Field(default="127.0.0.1:8080", description="HOST:PORT of the pages")
    users: dict[str, UserConfig] = Field(min_length=1)
    session_ttl_s: float = Field(default=8 * 3600, gt=0, description="a session's lifetime")
    secure_cookies: bool = Field(
        default=False, description="mark cookies Secure (set when served behind HTTPS)"
    )
    fleet_interval_s: float = Field(
        default=1.0, ge=0.05, le=60, description="at most one fleet event per stream this often"
    )
    router_interval_s: float = Field(
        default=0.5, ge=0.05, le=60, description="at most one router event per stream this often"
    )
    stream_max_s: float = Field(
        default=300.0,
        gt=0,
        description="a stream ends after this long and the browser reconnects (the session is "
        "checked again)",
    )
    history: HistoryConfig = HistoryConfig()
    login: LoginLimits = LoginLimits()
    metrics_listen: ListenAddress | None = Field(
        default=None, description="HOST:PORT of the Prometheus /metrics endpoint; None: off"
    )
    budget_alert_share: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="a link whose data budget is used to this share of its cap raises a "
        "budget-near-cap alert (the monitor's link reports carry the budget)",
    )

    def limits(self) -> Limits:
        """The core's bounds and thresholds."""
        return dataclasses.replace(
            self.history.limits(), budget_alert_share=self.budget_alert_share
        )

    @field_validator("users")
    @classmethod
    def _names(cls, users: dict[str, UserConfig]) -> dict[str, UserConfig]:
        for name in users:
            if not name or len(name) > 64 or not name.isprintable() or " " in name:
                raise ValueError(f"user name {name!r}: 1 to 64 printable characters, no space")
        return users
