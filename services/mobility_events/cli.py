"""`multinet mobility-events`: its parser (`add_subcommand`, for services/cli.py), load and
check settings, then run.

Kept apart from the service's loop so that the command-line concerns (messages, exit codes) do
not mix with the loop's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from services import netns
from services.cliargs import SubParsers, service_options
from services.contracts.errors import InvalidInput
from services.contracts.settings import ServiceFile, load_service_file
from services.metrics import MetricsListenError
from services.mobility_events.config import MobilityEventsSettings


def add_subcommand(sub: SubParsers) -> None:
    """`multinet mobility-events` in the command's parser."""
    events = sub.add_parser(
        "mobility-events",
        help="binding events from observed Binding Updates/Acknowledgements, to MQTT",
        description="Capture Binding Updates and Acknowledgements (raw protocol-135 socket, and "
        "outgoing ones on a packet socket), keep the binding view per (mobile router, BID) and "
        "publish registered / refreshed / coa-changed / handover-started / deregistered / "
        "expired / rejected events. Settings: the [mobility_events] and [broker] tables.",
    )
    service_options(events)
    events.add_argument("--netns", metavar="NAME", help="capture in network namespace NAME")
    events.add_argument("--check", action="store_true", help="validate the settings and exit")
    events.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    return main(
        args.config, args.netns, check=args.check, log_level=args.log_level, json_logs=args.log_json
    )


def load(path: Path) -> ServiceFile[MobilityEventsSettings]:
    """Read and validate a settings file (errors name the dotted key; raises InvalidInput)."""
    return load_service_file(path, "mobility_events", MobilityEventsSettings)


def main(
    config_path: Path,
    netns_name: str | None,
    *,
    check: bool,
    log_level: str,
    json_logs: bool = False,
) -> int:
    """`multinet mobility-events --config FILE [--netns NAME] [--check]`."""
    from services import logsetup
    from services.mobility_events.service import run

    try:
        config = load(config_path)
    except InvalidInput as exc:
        for problem in exc.problems:
            print(f"{config_path}: {problem}", file=sys.stderr)
        return 2
    if check:
        print(f"{config_path}: OK (mobility_events)")
        return 0
    if netns_name is not None and not netns.exists(netns_name):
        print(f"network namespace {netns_name!r} does not exist (ip netns list)", file=sys.stderr)
        return 2
    logsetup.configure(config.settings.node, level=log_level, json_lines=json_logs)
    try:
        run(config.settings, config.broker, netns_name)
    except PermissionError as exc:
        print(f"cannot open capture sockets: {exc} (needs CAP_NET_RAW)", file=sys.stderr)
        return 1
    except MetricsListenError as exc:
        print(f"node {config.settings.node}: {exc}", file=sys.stderr)
        return 1
    return 0
