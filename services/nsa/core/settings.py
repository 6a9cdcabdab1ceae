"""The `[nsa]` table: who this replica is and what it decides for, as validated data.

The table says who this replica is (`name`, `replicas`, `replica`), which mobile routers it may
decide for (each with the node ids of its HA and MR workers), how it delivers (the SOAP
gateway's URL and HTTP Basic credentials, or a dry run), and what it is told to want: the
decision settings, application profiles, and the initial preferences and operator rules,
inline or in files. Retained MQTT documents replace preferences and rules at run time.

Validated whole with unknown keys refused; every error names the dotted key. `check-config`
validates the table itself. Reading the file and the files it names (profiles, preferences,
rules, the gateway's password) is the shell's part: `services.nsa.settings.load_file`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from services.contracts.policy import NodeId
from services.contracts.settings import ListenAddress
from services.nsa.core.config import (
    ApplicationProfile,
    NsaConfig,
    NsaSettings,
    OperatorRules,
    Preferences,
)
from services.nsa.core.frozen import Frozen


class RouterEntry(Frozen):
    """One mobile router: the node enforcing its downlink (HA) and uplink (MR) policies.

    `mr_node` is also the node id its monitor publishes link metrics and state under."""

    id: NodeId
    ha_node: NodeId
    mr_node: NodeId

    @model_validator(mode="after")
    def _distinct(self) -> RouterEntry:
        if self.ha_node == self.mr_node:
            raise ValueError(f"ha_node and mr_node are both {self.ha_node!r}")
        return self


class GatewayLink(Frozen):
    """How decisions reach the PREM workers.

    `soap`: through the SOAP gateway at `url` (its WSDL at `url?wsdl`), with HTTP Basic
    credentials when `username` is set. `dry-run`: nothing is sent; every message counts as
    applied at once (benchmarks of the decision side, trying out profiles). The password is
    better given by the environment (MULTINET_NSA__GATEWAY__PASSWORD) or a file than written
    in the settings file.
    """

    mode: Literal["soap", "dry-run"] = "soap"
    url: str | None = Field(default=None, pattern=r"^https?://[^\s]+$")
    username: str | None = Field(default=None, min_length=1, pattern=r"^[^:\x00-\x1f\x7f]+$")
    password: SecretStr | None = None
    password_file: Path | None = None
    workers: int = Field(default=4, ge=1, le=64, description="calls in flight at once")
    connect_timeout_s: float = Field(default=5.0, gt=0, le=120)
    call_timeout_s: float = Field(
        default=30.0, gt=0, le=600, description="above the gateway's ack_deadline_s"
    )

    @model_validator(mode="after")
    def _consistent(self) -> GatewayLink:
        if self.mode == "soap" and self.url is None:
            raise ValueError("mode soap needs the gateway's url")
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        if (self.password is not None or self.password_file is not None) and not self.username:
            raise ValueError("a password needs its username")
        return self


class Coordination(Frozen):
    """`[nsa.coordination]`: replicas that share the routers through leases on etcd.

    Absent (the embedded default), the replica decides alone for its static share
    (`replicas`/`replica`). Present, every replica is configured with the same routers,
    `partitions` and `etcd`, and which replica decides for which partition is decided by
    leases (`services.nsa.core.ownership`, `services.nsa.leases`).
    """

    etcd: str = Field(
        pattern=r"^https?://[^\s/]+$",
        description="etcd's client URL (its v3 JSON gateway), e.g. http://127.0.0.1:2379",
    )
    partitions: int = Field(default=16, ge=1, le=4096, description="fixed partition count")
    lease_ttl_s: int = Field(
        default=2, ge=1, le=60, description="a dead replica's partitions move after this"
    )
    warm_s: float = Field(
        default=1.5,
        ge=0,
        description="a rebalanced partition's new owner reads the bus this long first",
    )
    prefix: str = Field(default="/multinet/nsa/", pattern=r"^/[^\s]*/$")


class NsaServiceSettings(Frozen):
    """The `[nsa]` table: one NSA replica."""

    name: NodeId = Field(default="nsa", description="replica name: MQTT client id, logs")
    replicas: int = Field(default=1, ge=1, le=256)
    replica: int = Field(default=0, ge=0, description="this replica's index, below replicas")
    scheme: Literal[1, 2] = 1
    mobile_routers: tuple[RouterEntry, ...] = Field(min_length=1)
    gateway: GatewayLink = GatewayLink(mode="dry-run")
    decision: NsaSettings = NsaSettings()
    profiles: tuple[ApplicationProfile, ...] = ()
    profiles_file: Path | None = None
    preferences: tuple[Preferences, ...] = ()
    preferences_file: Path | None = None
    rules: OperatorRules | None = None
    rules_file: Path | None = None
    startup_hold_s: float = Field(
        default=30.0, ge=0, description="longest wait for binding events before delivering"
    )
    first_period_s: float = Field(
        default=1.5, ge=0, description="after a router's first input, wait for its other links"
    )
    refresh_s: float | None = Field(
        default=60.0, gt=0, description="re-decide (and re-explain) each MR at least this often"
    )
    retry_s: float = Field(default=1.0, gt=0, description="first back-off after a failed call")
    retry_max_s: float = Field(default=30.0, gt=0)
    queue_size: int = Field(default=50000, ge=100, le=10_000_000)
    metrics_listen: ListenAddress | None = Field(
        default=None, description="HOST:PORT of the Prometheus /metrics endpoint; None: off"
    )
    coordination: Coordination | None = None

    @model_validator(mode="after")
    def _consistent(self) -> NsaServiceSettings:
        if self.replica >= self.replicas:
            raise ValueError(f"replica {self.replica} is not below replicas {self.replicas}")
        if self.coordination is not None and self.replicas > 1:
            raise ValueError(
                "give either coordination (leases on etcd) or a static share (replicas), not both"
            )
        if "scheme" in self.decision.model_fields_set:
            raise ValueError("set scheme in [nsa], not in [nsa.decision]")
        if self.retry_max_s < self.retry_s:
            raise ValueError("retry_max_s is below retry_s")
        for inline, path in (
            ("profiles", self.profiles_file),
            ("preferences", self.preferences_file),
            ("rules", self.rules_file),
        ):
            if path is not None and inline in self.model_fields_set:
                raise ValueError(f"give {inline} or {inline}_file, not both")
        if not self.profiles and self.profiles_file is None:
            raise ValueError("no application profiles: give profiles or profiles_file")
        _check_routers(self.mobile_routers)
        if not (self.profiles_file or self.preferences_file or self.rules_file):
            # Everything is inline: the cross-references can be checked here already.
            self.base_config(self.profiles, self.preferences, self.rules or OperatorRules())
        return self

    def base_config(
        self,
        profiles: tuple[ApplicationProfile, ...],
        preferences: tuple[Preferences, ...],
        rules: OperatorRules,
    ) -> NsaConfig:
        """The configuration every mobile router starts from (scheme from this table)."""
        return NsaConfig(
            settings=self.decision.model_copy(update={"scheme": self.scheme}),
            profiles=profiles,
            preferences=preferences,
            rules=rules,
        )

    def router(self, mobile_router: str) -> RouterEntry | None:
        """The entry of `mobile_router`, or None when it is not served."""
        return next((r for r in self.mobile_routers if r.id == mobile_router), None)


def _check_routers(routers: tuple[RouterEntry, ...]) -> None:
    seen: set[str] = set()
    mr_nodes: dict[str, str] = {}
    for router in routers:
        if router.id in seen:
            raise ValueError(f"mobile router {router.id!r} is declared twice")
        seen.add(router.id)
        owner = mr_nodes.setdefault(router.mr_node, router.id)
        if owner != router.id:
            raise ValueError(f"node {router.mr_node!r} is the MR of {owner!r} and {router.id!r}")
    for router in routers:
        if router.ha_node in mr_nodes:
            raise ValueError(f"node {router.ha_node!r} is an HA and an MR node")
