"""The `multinet` command: one subcommand per service, plus validate-only checks."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ValidationError

from services import netns
from services.cliargs import service_options as _service_options
from services.contracts import policy_xml
from services.contracts.errors import InvalidInput
from services.contracts.settings import BrokerSettings, apply_env, read_file, validate_section
from services.mcoa.config import McoaSettings
from services.mobility_events.config import MobilityEventsSettings
from services.monitor.config import MonitorSettings
from services.monitor.probe import DEFAULT_PROBE_PORT
from services.nsa.settings import NsaServiceSettings
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

    events = sub.add_parser(
        "mobility-events",
        help="binding events from observed Binding Updates/Acknowledgements, to MQTT",
        description="Capture Binding Updates and Acknowledgements (raw protocol-135 socket, and "
        "outgoing ones on a packet socket), keep the binding view per (mobile router, BID) and "
        "publish registered / refreshed / coa-changed / handover-started / deregistered / "
        "expired / rejected events. Settings: the [mobility_events] and [broker] tables.",
    )
    _service_options(events)
    events.add_argument("--netns", metavar="NAME", help="capture in network namespace NAME")
    events.add_argument("--check", action="store_true", help="validate the settings and exit")
    events.set_defaults(func=_mobility_events_run)

    agent = sub.add_parser(
        "mcoa-agent",
        help="the test bed's MCoA agent: Binding Updates from the MR, bindings and pipes at the HA",
        description="Play the MCoA-enabled NEMO daemon this kernel lacks: the MR side registers "
        "one care-of address per link (BU with a BID option), the HA side answers BAs and keeps "
        "one routing table and SRv6 pipe per BID. Settings: the [mcoa] table.",
    )
    _service_options(agent)
    agent.add_argument("--role", choices=["mr", "ha"], help="check the file's role is this one")
    agent.add_argument("--netns", metavar="NAME", help="run in network namespace NAME")
    agent.set_defaults(func=_mcoa_agent_run)

    monitor = sub.add_parser(
        "monitor",
        help="the link monitor: link state, probes, counters and radio of each access link, "
        "to MQTT",
        description="Watch every configured link of this node: carrier, admin state and "
        "addresses from netlink events; RTT, jitter and loss from ICMPv6 or UDP probes bound to "
        "the link; bit rates from interface counters; radio values from nl80211 or a trace. "
        "Publishes link state (retained) on every change and metrics every period and on a "
        "material change. Settings: the [monitor] and [broker] tables.",
    )
    _service_options(monitor)
    monitor.add_argument("--netns", metavar="NAME", help="watch the links of namespace NAME")
    monitor.add_argument(
        "--fast", action="store_true", help="probe every fast_interval_s (default 100 ms)"
    )
    monitor.add_argument("--check", action="store_true", help="validate the settings and exit")
    monitor.set_defaults(func=_monitor_run)

    _nsa_parser(sub)

    from services.doctor import add_subcommand as add_doctor

    add_doctor(sub)

    from services.testbed.cli import add_subcommand as add_testbed

    add_testbed(sub)

    _responder_parser(sub)
    return parser


def _responder_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    responder = sub.add_parser(
        "probe-responder",
        help="answer the monitor's UDP probes, optionally after a delay",
        description="Echo the monitor's UDP probe datagrams (and nothing else) after --delay-ms, "
        "so a link's measured RTT can be given a known delay on a kernel without netem.",
    )
    responder.add_argument("--listen", default="::", metavar="ADDRESS", help="default ::")
    responder.add_argument("--port", type=int, default=DEFAULT_PROBE_PORT)
    responder.add_argument("--delay-ms", type=float, default=0.0, help="added to every answer")
    responder.add_argument("--interface", metavar="NAME", help="answer on this device only")
    responder.add_argument("--netns", metavar="NAME", help="serve in network namespace NAME")
    responder.set_defaults(func=_probe_responder_run)


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


def _monitor_run(args: argparse.Namespace) -> int:
    from services.monitor.main import main as monitor_main

    return monitor_main(
        args.config,
        args.netns,
        check=args.check,
        fast=args.fast,
        log_level=args.log_level,
        json_logs=args.log_json,
    )


def _probe_responder_run(args: argparse.Namespace) -> int:
    from services.monitor.responder import ResponderSettings, serve_forever

    try:
        settings = ResponderSettings(
            address=args.listen,
            port=args.port,
            delay_ms=args.delay_ms,
            interface=args.interface,
        )
    except ValidationError as exc:
        for error in exc.errors():
            print(f"probe-responder: {error['loc'][0]}: {error['msg']}", file=sys.stderr)
        return 2
    if args.netns is not None:
        if not netns.exists(args.netns):
            print(f"network namespace {args.netns!r} does not exist", file=sys.stderr)
            return 2
        netns.enter(args.netns)
    return serve_forever(settings)


def _mcoa_agent_run(args: argparse.Namespace) -> int:
    from services.mcoa.agent import main as mcoa_main

    return mcoa_main(
        args.config, args.role, args.netns, log_level=args.log_level, json_logs=args.log_json
    )


def _mobility_events_run(args: argparse.Namespace) -> int:
    from services.mobility_events.service import main as mobility_events_main

    return mobility_events_main(
        args.config, args.netns, check=args.check, log_level=args.log_level, json_logs=args.log_json
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `multinet` console script."""
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
