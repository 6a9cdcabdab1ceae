"""Loading service settings from a TOML or YAML file plus environment overrides.

A settings file holds one table per service (`[prem]`, `[broker]` ...). Environment variables
`MULTINET_<SECTION>__<KEY>__<SUBKEY>=value` override single keys; values are parsed as JSON when
they can be (numbers, booleans, lists), else taken as strings. Every error names the dotted key.

Kept rather than pydantic-settings (issue 15): it would still need wrapping here, as it skips a
missing file silently and lets a broken one raise without its name, picks no table by service
name without a model built per call, and cannot replace `read_file`/`apply_env`, which the
NSA's settings and `multinet check-config` use on whole files; one more dependency (and
python-dotenv), 87 ms more start-up, for the same env syntax and the same pydantic errors.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Generic, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from services.contracts.errors import ConfigError, Problem
from services.contracts.limits import MAX_PACKET_BYTES
from services.contracts.topics import DEFAULT_ROOT

ENV_PREFIX = "MULTINET_"
ModelT = TypeVar("ModelT", bound=BaseModel)


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` (`[v6]:PORT` for an IPv6 address) as (host, port); port 0 picks a free one."""
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:9101), got {value!r}")
    return host, int(port)


def _valid_listen(value: str) -> str:
    parse_listen(value)
    return value


#: The type of every service's `metrics_listen` setting (None: no endpoint).
ListenAddress = Annotated[str, AfterValidator(_valid_listen)]


class BrokerSettings(BaseModel):
    """Where the MQTT broker is and how to authenticate to it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: Path | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    topic_root: str = DEFAULT_ROOT
    session_expiry_s: int = Field(default=86400, ge=0)
    #: The MQTT 5 maximum packet size this client announces at CONNECT: the broker sends it
    #: nothing larger (it drops such a message for this client instead).
    max_packet_bytes: int = Field(default=MAX_PACKET_BYTES, ge=1024, le=268_435_455)


def read_file(path: Path) -> dict[str, Any]:
    """Read a TOML (.toml) or YAML (.yaml/.yml) file into a dict."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(f"cannot read {path}: {exc.strerror}")]) from exc
    try:
        if path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(
            [Problem(f"{path} is not valid {path.suffix[1:] or 'TOML'}: {exc}")]
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError([Problem(f"{path} must hold a table of settings")])
    return data


def apply_env(data: dict[str, Any], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Return a copy of `data` with MULTINET_* environment overrides applied."""
    result: dict[str, Any] = json.loads(json.dumps(data, default=str))
    for name, raw in (os.environ if environ is None else environ).items():
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX) :].split("__") if k]
        if not keys:
            continue
        target = result
        for key in keys[:-1]:
            target = target.setdefault(key, {})
            if not isinstance(target, dict):
                raise ConfigError([Problem(f"{name} overrides inside a non-table value")])
        try:
            target[keys[-1]] = json.loads(raw)
        except json.JSONDecodeError:
            target[keys[-1]] = raw
    return result


def validation_problems(exc: ValidationError, prefix: str = "") -> list[Problem]:
    """Turn pydantic's errors into problems naming the dotted key of each."""
    problems = []
    for err in exc.errors():
        key = ".".join(str(part) for part in (prefix, *err["loc"]) if part != "")
        problems.append(Problem(err["msg"], field=key or None))
    return problems


def validate_section(model: type[ModelT], data: Mapping[str, Any], section: str) -> ModelT:
    """Validate one table of a settings file; errors name `section.key`."""
    try:
        return model.model_validate(data.get(section, {}))
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, section)) from exc


@dataclass(frozen=True)
class ServiceFile(Generic[ModelT]):
    """One service's table of a settings file, and the broker table beside it."""

    settings: ModelT
    broker: BrokerSettings


def load_service_file(path: Path, section: str, model: type[ModelT]) -> ServiceFile[ModelT]:
    """Read `path`, apply `MULTINET_SECTION__KEY` overrides, validate `[section]` and
    `[broker]` (errors name the dotted key; raises InvalidInput). Other services' tables in
    the same file are ignored, so one file can serve every service of a node."""
    data = apply_env(read_file(path))
    return ServiceFile(
        validate_section(model, data, section), validate_section(BrokerSettings, data, "broker")
    )
