"""`multinet nsa run|explain`: one NSA replica, and the current reasoning for one router.

`add_subcommand` hangs the parser under `multinet` for services/cli.py; the service and the
explain client are imported only when their command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from services.cliargs import service_options


def add_subcommand(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`multinet nsa run|explain` in the command's parser."""
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
    service_options(run)
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
