"""The `multinet` command: one subcommand per service, plus validate-only checks."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from services.console.config import ConsoleSettings
from services.contracts import policy_xml
from services.contracts.errors import InvalidInput
from services.contracts.settings import BrokerSettings, apply_env, read_file, validate_section
from services.mcoa.config import McoaSettings
from services.mobility_events.config import MobilityEventsSettings
from services.monitor.config import MonitorSettings
from services.nsa.core.settings import NsaServiceSettings
from services.prem.config import PremSettings
from services.soap_gateway.config import GatewaySettings, StandaloneSoapSettings

#: Settings sections each service reads, validated by `check-config`.
SECTIONS: dict[str, type[BaseModel]] = {
    "prem": PremSettings,
    "soap_gateway": GatewaySettings,
    "mobility_events": MobilityEventsSettings,
    "mcoa": McoaSettings,
    "monitor": MonitorSettings,
    "nsa": NsaServiceSettings,
    "standalone": StandaloneSoapSettings,
    "console": ConsoleSettings,
}


def _check_config(args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        if path.suffix == ".xml":
            message = policy_xml.parse(path.read_bytes())
            print(
                f"{path}: valid policy document for node {message.node}, version "
                f"{message.version}, {message.operation.kind} of {message.policy_count()} entries"
            )
            return 0
        data = apply_env(read_file(path))
        found = [name for name in SECTIONS if name in data]
        unknown = sorted(set(data) - set(SECTIONS) - {"broker"})
        if unknown:
            print(
                f"{path}: unknown section(s) {', '.join(unknown)}; known: "
                f"{', '.join(sorted([*SECTIONS, 'broker']))}",
                file=sys.stderr,
            )
            return 2
        if not found:
            print(
                f"{path}: no service section found (expected one of {', '.join(SECTIONS)})",
                file=sys.stderr,
            )
            return 2
        for name in found:
            validate_section(SECTIONS[name], data, name)
        validate_section(BrokerSettings, data, "broker")
    except InvalidInput as exc:
        for problem in exc.problems:
            print(f"{path}: {problem}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{path}: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"{path}: OK ({', '.join(found)})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `multinet` command."""
    parser = argparse.ArgumentParser(
        prog="multinet",
        description="Policy-based flow redirection for multihomed NEMO mobile networks.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser(
        "check-config",
        help="validate a settings file (TOML/YAML) or a policy document (.xml) and exit",
        description="Validate only: prints OK or every problem with its key, exit 2 on error.",
    )
    check.add_argument("file", type=Path, help="settings file (.toml, .yaml) or policy (.xml)")
    check.set_defaults(func=_check_config)

    from services.prem.cli import add_subcommand as add_prem

    add_prem(sub)

    from services.soap_gateway.cli import add_subcommand as add_soap_gateway

    add_soap_gateway(sub)

    from services.mobility_events.cli import add_subcommand as add_mobility_events

    add_mobility_events(sub)

    from services.mcoa.cli import add_subcommand as add_mcoa_agent

    add_mcoa_agent(sub)

    from services.monitor.cli import add_subcommand as add_monitor

    add_monitor(sub)

    from services.nsa.cli import add_subcommand as add_nsa

    add_nsa(sub)

    from services.console.cli import add_subcommand as add_console

    add_console(sub)

    from services.doctor import add_subcommand as add_doctor

    add_doctor(sub)

    from services.testbed.cli import add_subcommand as add_testbed

    add_testbed(sub)

    from services.monitor.cli import add_responder_subcommand

    add_responder_subcommand(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `multinet` console script."""
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
