"""Settings of the SOAP gateway (the `[soap_gateway]` table): where it listens, its limits,
and which mobile routers it serves with the node ids of their HA and MR workers.

The gateway addresses only the nodes named here, so a caller cannot make it publish to an
arbitrary topic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.contracts.policy import NodeId
from services.contracts.settings import ListenAddress
from services.soap_gateway.passwords import PasswordHash


class MobileRouterSettings(BaseModel):
    """One mobile router: the node enforcing its downlink (HA) and its uplink (MR) policies."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: NodeId
    ha_node: NodeId
    mr_node: NodeId

    @model_validator(mode="after")
    def _distinct_nodes(self) -> MobileRouterSettings:
        if self.ha_node == self.mr_node:
            raise ValueError(f"ha_node and mr_node are both {self.ha_node!r}")
        return self


class CallerSettings(BaseModel):
    """One SOAP caller: its Basic user-id, its password hash (see `passwords.hash_password`) and
    the mobile routers it may address ("*": all of them)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=r"^[^:\x00-\x1f\x7f]+$")
    password_hash: str
    mobile_routers: tuple[NodeId, ...] | Literal["*"]

    @field_validator("password_hash")
    @classmethod
    def _hash_form(cls, value: str) -> str:
        PasswordHash.parse(value)
        return value


class GatewaySettings(BaseModel):
    """Validated settings of one SOAP gateway."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: NodeId = "soap-gateway"
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    max_policies: int = Field(default=20000, ge=1)
    ack_deadline_s: float = Field(default=10.0, gt=0, le=300)
    socket_timeout_s: float = Field(default=30.0, gt=0, le=600)
    threads: int = Field(default=10, ge=1, le=256)
    udp_port: int | None = Field(
        default=None, ge=0, le=65535, description="SOAP over UDP on host:udp_port; None: off"
    )
    udp_max_datagram_bytes: int = Field(
        default=65507, ge=512, le=65507, description="larger request datagrams get a Fault"
    )
    mobile_routers: tuple[MobileRouterSettings, ...] = Field(min_length=1)
    #: Who may call (HTTP Basic); none configured means authentication is off.
    callers: tuple[CallerSettings, ...] = ()
    #: PEM certificate (chain) and key; both or neither. Without them the gateway speaks HTTP.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    metrics_listen: ListenAddress | None = Field(
        default=None, description="HOST:PORT of the Prometheus /metrics endpoint; None: off"
    )

    @model_validator(mode="after")
    def _callers_and_tls(self) -> GatewaySettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        served = {r.id for r in self.mobile_routers}
        names: set[str] = set()
        for caller in self.callers:
            if caller.name in names:
                raise ValueError(f"caller {caller.name!r} is declared twice")
            names.add(caller.name)
            unknown = [] if caller.mobile_routers == "*" else set(caller.mobile_routers) - served
            if unknown:
                raise ValueError(
                    f"caller {caller.name!r} may address {sorted(unknown)}, "
                    "which this gateway does not serve"
                )
        return self

    @model_validator(mode="after")
    def _unique(self) -> GatewaySettings:
        seen: set[str] = set()
        nodes: dict[str, str] = {}
        for router in self.mobile_routers:
            if router.id in seen:
                raise ValueError(f"mobile router {router.id!r} is declared twice")
            seen.add(router.id)
            for node in (router.ha_node, router.mr_node):
                # A shared HA is fine; an MR node serving two mobile routers is not.
                owner = nodes.setdefault(node, router.id)
                if node == router.mr_node and owner != router.id:
                    raise ValueError(f"node {node!r} is the MR of {router.id!r} and of {owner!r}")
        return self

    def router(self, mobile_router: str) -> MobileRouterSettings | None:
        """The settings of a mobile router, or None when the gateway does not serve it."""
        return next((r for r in self.mobile_routers if r.id == mobile_router), None)

    def nodes(self) -> tuple[str, ...]:
        """Every worker node the gateway talks to, each once, in declaration order."""
        found: dict[str, None] = {}
        for router in self.mobile_routers:
            found.setdefault(router.ha_node)
            found.setdefault(router.mr_node)
        return tuple(found)


class StandaloneSoapSettings(BaseModel):
    """The `[standalone]` table of a PREM worker's settings file: who may call the SOAP service
    of `multinet prem run --standalone`, in the gateway's very format (`callers`, each
    naming the mobile routers it may address: this node's, or "*"), and its TLS files.

    Without callers the daemon accepts anyone who reaches it, and says so loudly at start."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    callers: tuple[CallerSettings, ...] = ()
    tls_cert: Path | None = None
    tls_key: Path | None = None


def access_warnings(settings: GatewaySettings, *, tls: bool, what: str) -> list[str]:
    """What a SOAP server must warn about at start: no authentication at all, or passwords
    over a channel without TLS. `what` names the server in the messages."""
    if not settings.callers:
        return [
            f"{what}: NO AUTHENTICATION: no callers are configured, so anyone who can reach "
            f"{settings.host}:{settings.port} may change the policies it enforces"
        ]
    if not tls:
        return [
            f"{what}: callers are configured but TLS is not (tls_cert, tls_key): their "
            "passwords cross the network in clear text"
        ]
    return []
