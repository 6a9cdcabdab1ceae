"""`multinet mcoa-agent`: its parser (`add_subcommand`, for services/cli.py); `agent.main`
loads the settings and runs the agent."""

from __future__ import annotations

import argparse

from services.cliargs import SubParsers, service_options


def add_subcommand(sub: SubParsers) -> None:
    """`multinet mcoa-agent` in the command's parser."""
    agent = sub.add_parser(
        "mcoa-agent",
        help="the test bed's MCoA agent: Binding Updates from the MR, bindings and pipes at the HA",
        description="Play the MCoA-enabled NEMO daemon this kernel lacks: the MR side registers "
        "one care-of address per link (BU with a BID option), the HA side answers BAs and keeps "
        "one routing table and SRv6 pipe per BID. Settings: the [mcoa] table.",
    )
    service_options(agent)
    agent.add_argument("--role", choices=["mr", "ha"], help="check the file's role is this one")
    agent.add_argument("--netns", metavar="NAME", help="run in network namespace NAME")
    agent.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from services.mcoa.agent import main

    return main(
        args.config, args.role, args.netns, log_level=args.log_level, json_logs=args.log_json
    )
