"""Fixtures for the SOAP security tests: callers with known passwords, settings files for a
gateway and for standalone daemons that require them, and real processes (tests/faults/procs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.soap_gateway.passwords import hash_password

#: The NSA's SOAP password in these tests (a caller of every mobile router).
PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class CallerTable:
    """A `callers = [...]` TOML line and the caller's name and password."""

    line: str
    name: str = "nsa"
    password: str = PASSWORD


def caller_table(iterations: int = 1000) -> CallerTable:
    """One caller, `nsa`, for every mobile router; `iterations` of PBKDF2 (the default is the
    production cost, which the throttling test needs; the others need it cheap)."""
    digest = hash_password(PASSWORD, iterations=iterations)
    return CallerTable(
        f'callers = [{{ name = "nsa", password_hash = "{digest}", mobile_routers = "*" }}]\n'
    )


def gateway_config(
    path: Path, topic_root: str, callers: CallerTable | None, *, broker_port: int = 1883
) -> Path:
    """A gateway on any free port for mr1 (HA ha1, MR mr1), with `callers` (or none)."""
    path.write_text(
        "[soap_gateway]\n"
        "port = 0\nack_deadline_s = 10\n"
        'mobile_routers = [{ id = "mr1", ha_node = "ha1", mr_node = "mr1" }]\n'
        f"{callers.line if callers else ''}"
        "[broker]\n"
        f"port = {broker_port}\n"
        f'topic_root = "{topic_root}"\n',
        encoding="utf-8",
    )
    return path


def add_standalone_callers(config: Path, callers: CallerTable) -> Path:
    """Append a `[standalone]` table with `callers` to a PREM worker's settings file."""
    text = config.read_text(encoding="utf-8")
    config.write_text(f"[standalone]\n{callers.line}{text}", encoding="utf-8")
    return config
