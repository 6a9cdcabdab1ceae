"""`multinet prem run|demo`: a PREM worker (MQTT, or standalone SOAP) and the namespace demo.

`add_subcommand` hangs the parser under `multinet` for services/cli.py; the worker, the
standalone daemon and the demo are imported only when their command runs.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from services import netns
from services.cliargs import bad_file, service_options
from services.contracts.errors import ConfigError, InvalidInput, KernelError
from services.contracts.settings import (
    BrokerSettings,
    apply_env,
    load_service_file,
    read_file,
    validate_section,
)
from services.metrics import MetricsListenError
from services.prem.config import PremSettings

DEFAULT_SOAP_LISTEN = "127.0.0.1:8081"


def add_subcommand(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`multinet prem run|demo` in the command's parser."""
    prem = sub.add_parser("prem", help="the Policy Reception and Enforcement Module (HA or MR)")
    prem_sub = prem.add_subparsers(dest="prem_command", required=True, metavar="ACTION")
    run = prem_sub.add_parser(
        "run",
        help="run a worker: policies from MQTT, enforced in this node's kernel",
        description="Run a PREM worker until SIGTERM. Settings come from the [prem] and "
        "[broker] tables of --config, overridden by MULTINET_PREM__KEY environment variables.",
    )
    service_options(run)
    run.add_argument(
        "--netns",
        metavar="NAME",
        help="enforce in network namespace NAME while keeping the broker connection in the "
        "current one (test bed)",
    )
    run.add_argument(
        "--remove-on-exit",
        action="store_true",
        help="remove every rule, chain and ip rule the worker owns when it stops",
    )
    run.add_argument(
        "--standalone",
        action="store_true",
        help="no broker: serve the SOAP service on --soap-listen and enforce this node's part "
        "of each call directly (one daemon per node)",
    )
    run.add_argument(
        "--soap-listen",
        metavar="HOST:PORT",
        help=f"standalone: where the SOAP service listens (default {DEFAULT_SOAP_LISTEN}; "
        "port 0: any)",
    )
    run.add_argument(
        "--soap-udp",
        metavar="PORT",
        type=int,
        help="standalone: also serve SOAP over UDP on HOST:PORT (0: any free port)",
    )
    run.set_defaults(func=_run)

    demo = prem_sub.add_parser(
        "demo",
        help="build a namespace lab, run a real worker, move a flow between BIDs and print it",
    )
    demo.add_argument("--backend", choices=["nftables", "iptables"], default="nftables")
    demo.add_argument("--keep", action="store_true", help="leave the namespaces for inspection")
    demo.set_defaults(func=_demo)


def _run(args: argparse.Namespace) -> int:
    from services import logsetup

    try:
        config = load_service_file(args.config, "prem", PremSettings)
    except InvalidInput as exc:
        return bad_file(args.config, exc)
    settings = config.settings
    if args.remove_on_exit:
        settings = settings.model_copy(update={"remove_on_exit": True})
    if args.netns is not None and not netns.exists(args.netns):
        print(f"network namespace {args.netns!r} does not exist (ip netns list)", file=sys.stderr)
        return 2
    if not args.standalone and (args.soap_listen is not None or args.soap_udp is not None):
        print("--soap-listen and --soap-udp need --standalone", file=sys.stderr)
        return 2
    if args.standalone:
        if settings.serves is not None:
            print("--standalone serves one mobile router: remove `serves`", file=sys.stderr)
            return 2
        return _standalone(args, settings)
    logsetup.configure(settings.node, level=args.log_level, json_lines=args.log_json)
    return _worker(args, settings, config.broker)


def _worker(args: argparse.Namespace, settings: PremSettings, broker: BrokerSettings) -> int:
    """The MQTT worker: for one mobile router, or (`serves`) for many at an HA."""
    from services.prem.worker import PremWorker

    try:
        if settings.serves is not None:
            from services.prem.fleetworker import FleetWorker

            FleetWorker(settings, broker, netns_name=args.netns).run()
        else:
            PremWorker(settings, broker, netns_name=args.netns).run()
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"node {settings.node}: {problem.reason}", file=sys.stderr)
        return 2
    except (KernelError, PermissionError, MetricsListenError) as exc:
        _cannot_enforce(settings, exc)
        return 1
    return 0


def _standalone(args: argparse.Namespace, settings: PremSettings) -> int:
    """`prem run --standalone`: the SOAP side from --soap-listen, --soap-udp and the
    [standalone] table; exit status 2 (after a message) when they are wrong."""
    from services import logsetup
    from services.prem.standalone import StandaloneWorker, standalone_settings
    from services.soap_gateway.api import ListenError, StandaloneSoapSettings

    listen = args.soap_listen or DEFAULT_SOAP_LISTEN
    host, _, port = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or int(port) > 65535:
        print(f"--soap-listen {listen!r}: expected HOST:PORT", file=sys.stderr)
        return 2
    try:
        soap = validate_section(
            StandaloneSoapSettings, apply_env(read_file(args.config)), "standalone"
        )
    except InvalidInput as exc:
        return bad_file(args.config, exc)
    try:
        gateway = standalone_settings(settings, host, int(port), udp_port=args.soap_udp, soap=soap)
    except ValidationError as exc:
        for error in exc.errors():
            print(f"standalone SOAP settings: {error['loc'][0]}: {error['msg']}", file=sys.stderr)
        return 2
    logsetup.configure(settings.node, level=args.log_level, json_lines=args.log_json)
    try:
        StandaloneWorker(settings, gateway, netns_name=args.netns).run()
    except (ListenError, MetricsListenError) as exc:
        print(f"node {settings.node}: {exc}", file=sys.stderr)
        return 1
    except (KernelError, PermissionError) as exc:
        _cannot_enforce(settings, exc)
        return 1
    return 0


def _cannot_enforce(settings: PremSettings, exc: Exception) -> None:
    if isinstance(exc, MetricsListenError):
        print(f"node {settings.node}: {exc}", file=sys.stderr)
        return
    print(
        f"node {settings.node}: cannot enforce: {exc} (the worker needs root or CAP_NET_ADMIN "
        "in its network namespace)",
        file=sys.stderr,
    )


def _demo(args: argparse.Namespace) -> int:
    from labs.prem_demo import run_demo

    return run_demo(backend=args.backend, keep=args.keep)
