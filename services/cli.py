"""The `multinet` command: one subcommand per service, plus validate-only checks."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from services.cliargs import service_options as _service_options
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

    _nsa_parser(sub)

    from services.doctor import add_subcommand as add_doctor

    add_doctor(sub)

    from services.testbed.cli import add_subcommand as add_testbed

    add_testbed(sub)

    from services.monitor.cli import add_responder_subcommand

    add_responder_subcommand(sub)
    return parser


def _nsa_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    nsa = sub.add_parser(
        "nsa",
        help="the Network Selection Algorithm: decides each flow class's BID, delivers policies",
    )
    nsa_sub = nsa.add_subparsers(dest="nsa_command", required=True, metavar="ACTION")
    run = nsa_sub.add_parser(
        "run",
        help="run one NSA replica: inputs from MQTT, policies through the SOAP gateway",
        description="Decide for the mobile routers of the [nsa] table (this replica's share) "
        "from link metrics, link state, binding events, preferences and operator rules; "
        "deliver the policy changes through the SOAP gateway; publish every decision's "
        "explanation (retained) on mr/<mr>/decision. SIGHUP reloads the settings file. "
        "Settings: the [nsa] and [broker] tables, overridden by MULTINET_NSA__KEY variables.",
    )
    _service_options(run)
    run.set_defaults(func=_nsa_run)
    explain = nsa_sub.add_parser(
        "explain",
        help="print the current reasoning for one mobile router (from the retained decision)",
        description="Read the retained decision of MR from the broker of --config's [broker] "
        "table and print it: trigger, and per class the move, the reason and every link's "
        "score or the rules that excluded it. Exit 1 when there is none within --timeout.",
    )
    explain.add_argument("mobile_router", metavar="MR", help="the mobile router's id")
    explain.add_argument("--config", type=Path, required=True, help="settings file with [broker]")
    explain.add_argument("--timeout", type=float, default=3.0, help="seconds to wait (default 3)")
    explain.set_defaults(func=_nsa_explain)


def _nsa_run(args: argparse.Namespace) -> int:
    from services.nsa.service import main as nsa_main

    return nsa_main(args.config, log_level=args.log_level, json_logs=args.log_json)


def _nsa_explain(args: argparse.Namespace) -> int:
    from services.nsa.explain_cli import explain

    return explain(args.config, args.mobile_router, timeout_s=args.timeout)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `multinet` console script."""
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
