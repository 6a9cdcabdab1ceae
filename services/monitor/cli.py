"""`multinet monitor` and `multinet probe-responder`: their parsers (`add_subcommand`,
`add_responder_subcommand`, for services/cli.py), load and check settings, then run.

Kept apart from the event loop so that the command-line concerns (messages, exit codes) do not
mix with the loop's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from services import netns
from services.cliargs import SubParsers, service_options
from services.contracts.errors import InvalidInput, KernelError
from services.contracts.settings import ServiceFile, load_service_file
from services.metrics import MetricsListenError
from services.monitor.config import MonitorSettings
from services.monitor.probe import DEFAULT_PROBE_PORT
from services.monitor.trace import TraceError

if TYPE_CHECKING:
    from services.monitor.service import MonitorService


def load(path: Path) -> ServiceFile[MonitorSettings]:
    """Read and validate a settings file (errors name the dotted key; raises InvalidInput)."""
    return load_service_file(path, "monitor", MonitorSettings)


def main(
    config_path: Path,
    netns_name: str | None,
    *,
    check: bool,
    fast: bool,
    log_level: str,
    json_logs: bool = False,
) -> int:
    """`multinet monitor --config FILE [--netns NAME] [--fast] [--check]`."""
    from services import logsetup
    from services.monitor.service import MonitorService

    try:
        config = load(config_path)
        traces = config.settings.load_traces()
    except InvalidInput as exc:
        for problem in exc.problems:
            print(f"{config_path}: {problem}", file=sys.stderr)
        return 2
    except TraceError as exc:
        print(f"{config_path}: trace {exc}", file=sys.stderr)
        return 2
    settings = config.settings
    if fast:
        settings = settings.model_copy(update={"fast": True})
    if check:
        print(f"{config_path}: OK (monitor, {len(settings.links)} links)")
        return 0
    if netns_name is not None and not netns.exists(netns_name):
        print(f"network namespace {netns_name!r} does not exist (ip netns list)", file=sys.stderr)
        return 2
    logsetup.configure(settings.node, level=log_level, json_lines=json_logs)
    return _run(MonitorService(settings, config.broker, netns_name=netns_name, traces=traces))


def _run(service: MonitorService) -> int:
    node = service.node
    try:
        service.run_in_signals()
    except InvalidInput as exc:
        for problem in exc.problems:
            print(f"node {node}: {problem}", file=sys.stderr)
        return 2
    except (KernelError, PermissionError) as exc:
        print(
            f"node {node}: cannot open probe or netlink sockets: {exc} (the monitor needs "
            "CAP_NET_RAW and CAP_NET_ADMIN in its network namespace)",
            file=sys.stderr,
        )
        return 1
    except MetricsListenError as exc:
        print(f"node {node}: {exc}", file=sys.stderr)
        return 1
    return 0


def add_subcommand(sub: SubParsers) -> None:
    """`multinet monitor` in the command's parser."""
    monitor = sub.add_parser(
        "monitor",
        help="the link monitor: link state, probes, counters and radio of each access link, "
        "to MQTT",
        description="Watch every configured link of this node: carrier, admin state and "
        "addresses from netlink events; RTT, jitter and loss from ICMPv6 or UDP probes bound to "
        "the link; bit rates from interface counters; radio values from nl80211 or a trace. "
        "Publishes link state (retained) on every change and metrics every period and on a "
        "material change (batch_metrics = true: the periodic metrics of all links as one "
        "message per period on the node's metrics topic). Settings: the [monitor] and [broker] "
        "tables.",
    )
    service_options(monitor)
    monitor.add_argument("--netns", metavar="NAME", help="watch the links of namespace NAME")
    monitor.add_argument(
        "--fast", action="store_true", help="probe every fast_interval_s (default 100 ms)"
    )
    monitor.add_argument("--check", action="store_true", help="validate the settings and exit")
    monitor.set_defaults(func=_monitor_run)


def add_responder_subcommand(sub: SubParsers) -> None:
    """`multinet probe-responder` in the command's parser."""
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


def _monitor_run(args: argparse.Namespace) -> int:
    return main(
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
