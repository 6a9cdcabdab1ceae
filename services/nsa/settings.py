"""Settings of the NSA service (the `[nsa]` table) and loading them with the files they name.

The table says who this replica is (`name`, `replicas`, `replica`), which mobile routers it may
decide for (each with the node ids of its HA and MR workers), how it delivers (the SOAP
gateway's URL and HTTP Basic credentials, or a dry run), and what it is told to want: the
decision settings, application profiles, and the initial preferences and operator rules,
inline or in files. Retained MQTT documents replace preferences and rules at run time.

Validated whole with unknown keys refused; every error names the dotted key. `check-config`
validates the table itself; the files it names are read and validated by `load_file` (at start
and on every reload), with their paths relative to the settings file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, TypeAdapter, ValidationError, model_validator

from services.contracts.errors import ConfigError, Problem
from services.contracts.policy import NodeId
from services.contracts.settings import (
    BrokerSettings,
    apply_env,
    read_file,
    validate_section,
    validation_problems,
)
from services.metrics import ListenAddress
from services.nsa.config import (
    ApplicationProfile,
    NsaConfig,
    NsaSettings,
    OperatorRules,
    Preferences,
)
from services.nsa.frozen import Frozen


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

    def secret(self, base: Path | None = None) -> str | None:
        """The password: inline, or the first line of `password_file` (relative to `base`)."""
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is None:
            return None
        path = self.password_file if base is None else base / self.password_file
        try:
            return path.read_text(encoding="utf-8").splitlines()[0].strip()
        except (OSError, IndexError) as exc:
            raise ConfigError(
                [Problem(f"cannot read a password from {path}", field="nsa.gateway.password_file")]
            ) from exc


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

    @model_validator(mode="after")
    def _consistent(self) -> NsaServiceSettings:
        if self.replica >= self.replicas:
            raise ValueError(f"replica {self.replica} is not below replicas {self.replicas}")
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


class NsaFile(Frozen):
    """Everything one NSA replica runs on: its table, the broker and the base configuration."""

    nsa: NsaServiceSettings
    broker: BrokerSettings = BrokerSettings()
    config: NsaConfig
    password: SecretStr | None = None


def load_file(path: Path) -> NsaFile:
    """Read the settings file, the files it names, and validate everything together.

    Raises InvalidInput (ConfigError) whose problems name the dotted key, so a reload can be
    refused whole and the running configuration kept.
    """
    data = apply_env(read_file(path))
    settings = validate_section(NsaServiceSettings, data, "nsa")
    broker = validate_section(BrokerSettings, data, "broker")
    base = path.parent
    profiles = settings.profiles
    if settings.profiles_file is not None:
        profiles = _part(base / settings.profiles_file, "profiles", tuple[ApplicationProfile, ...])
    preferences = settings.preferences
    if settings.preferences_file is not None:
        path = base / settings.preferences_file
        preferences = _part(path, "preferences", tuple[Preferences, ...])
    rules = settings.rules or OperatorRules()
    if settings.rules_file is not None:
        rules = _part(base / settings.rules_file, "rules", OperatorRules)
    if not profiles:
        raise ConfigError([Problem("no application profiles", field="nsa.profiles_file")])
    try:
        config = settings.base_config(profiles, preferences, rules)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, "nsa")) from exc
    secret = settings.gateway.secret(base)
    if settings.gateway.mode == "soap" and settings.gateway.username and secret is None:
        raise ConfigError(
            [
                Problem(
                    "the gateway username is set but no password: give "
                    "MULTINET_NSA__GATEWAY__PASSWORD, password or password_file",
                    field="nsa.gateway.password",
                )
            ]
        )
    return NsaFile(
        nsa=settings,
        broker=broker,
        config=config,
        password=None if secret is None else SecretStr(secret),
    )


def _part(path: Path, key: str, shape: Any) -> Any:
    """One part (profiles, preferences, rules) from its own TOML/YAML/JSON file."""
    data = read_file(path)
    if set(data) != {key}:
        raise ConfigError([Problem(f"{path} must hold exactly one table or list `{key}`")])
    try:
        return TypeAdapter(shape).validate_python(data[key])
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, f"{path.name}:{key}")) from exc
