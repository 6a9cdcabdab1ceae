"""Loading the NSA's settings file with the files it names (profiles, preferences, rules,
the gateway's password), validated together.

The `[nsa]` table itself is data (`services.nsa.core.settings`); this is the part that reads
files, at start and on every reload, with their paths relative to the settings file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import SecretStr, TypeAdapter, ValidationError

from services.contracts.errors import ConfigError, Problem
from services.contracts.settings import (
    BrokerSettings,
    apply_env,
    read_file,
    validate_section,
    validation_problems,
)
from services.nsa.core.config import ApplicationProfile, NsaConfig, OperatorRules, Preferences
from services.nsa.core.frozen import Frozen
from services.nsa.core.settings import GatewayLink, NsaServiceSettings


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
    secret = _secret(settings.gateway, base)
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


def _secret(gateway: GatewayLink, base: Path) -> str | None:
    """The password: inline, or the first line of `password_file` (relative to `base`)."""
    if gateway.password is not None:
        return gateway.password.get_secret_value()
    if gateway.password_file is None:
        return None
    path = base / gateway.password_file
    try:
        return path.read_text(encoding="utf-8").splitlines()[0].strip()
    except (OSError, IndexError) as exc:
        raise ConfigError(
            [Problem(f"cannot read a password from {path}", field="nsa.gateway.password_file")]
        ) from exc
