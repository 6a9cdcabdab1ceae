"""`multinet soap-gateway`: serve the SOAP gateway until SIGTERM.

`add_subcommand` hangs the parser under `multinet` for services/cli.py; the server (spyne,
cheroot) is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import sys

from services.cliargs import bad_file, service_options
from services.contracts.errors import InvalidInput
from services.contracts.settings import load_service_file
from services.metrics import MetricsListenError
from services.soap_gateway.config import GatewaySettings


def add_subcommand(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`multinet soap-gateway` in the command's parser."""
    gateway = sub.add_parser(
        "soap-gateway",
        help="the SOAP gateway: policies from SOAP callers to the PREM workers over MQTT",
        description="Serve the SOAP 1.1 gateway (WSDL at ?wsdl) until SIGTERM. Settings come "
        "from the [soap_gateway] and [broker] tables of --config, overridden by "
        "MULTINET_SOAP_GATEWAY__KEY environment variables.",
    )
    service_options(gateway)
    gateway.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from services import logsetup
    from services.soap_gateway.server import GatewayServer
    from services.soap_gateway.soap_server import ListenError

    try:
        config = load_service_file(args.config, "soap_gateway", GatewaySettings)
    except InvalidInput as exc:
        return bad_file(args.config, exc)
    settings = config.settings
    logsetup.configure(settings.name, level=args.log_level, json_lines=args.log_json)
    try:
        GatewayServer(settings, config.broker).run()
    except (MetricsListenError, ListenError) as exc:
        print(f"gateway {settings.name}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the TLS certificate or key cannot be loaded
        print(f"gateway {settings.name}: {exc}", file=sys.stderr)
        return 1
    return 0
