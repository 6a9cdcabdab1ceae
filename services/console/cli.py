"""`multinet console`: `run` (the console) and `hash-password` (a user's password hash)."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from services.cliargs import SubParsers, bad_file, service_options
from services.console.config import ConsoleSettings
from services.contracts.errors import InvalidInput
from services.contracts.settings import ServiceFile, load_service_file
from services.metrics import MetricsListenError


def load(path: Path) -> ServiceFile[ConsoleSettings]:
    """Read and validate a settings file (errors name the dotted key; raises InvalidInput)."""
    return load_service_file(path, "console", ConsoleSettings)


def main(config_path: Path, *, check: bool, log_level: str, json_logs: bool = False) -> int:
    """`multinet console run --config FILE [--check]`."""
    from services import logsetup

    try:
        config = load(config_path)
    except InvalidInput as exc:
        return bad_file(config_path, exc)
    except OSError as exc:
        print(f"{config_path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    settings = config.settings
    if check:
        print(f"{config_path}: OK (console, {len(settings.users)} users, on {settings.listen})")
        return 0
    logsetup.configure(settings.name, level=log_level, json_lines=json_logs)
    from services.console.service import ConsoleService

    service = ConsoleService(settings, config.broker)
    try:
        service.run_in_signals()
    except MetricsListenError as exc:
        print(f"node {settings.name}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(
            f"node {settings.name}: cannot serve the console on {settings.listen}: "
            f"{exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    return 0


def _run(args: argparse.Namespace) -> int:
    return main(args.config, check=args.check, log_level=args.log_level, json_logs=args.log_json)


def _hash_password(args: argparse.Namespace) -> int:
    from services.soap_gateway.passwords import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("the two passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        print("an empty password is not a password", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0


def add_subcommand(sub: SubParsers) -> None:
    """`multinet console` in the command's parser."""
    console = sub.add_parser(
        "console",
        help="the live operator console: every mobile router, link, binding and flow class "
        "on web pages",
        description="A read-only view of the bus as web pages: the fleet (each mobile router "
        "with its HA, services online and alerts) and one page per router (links with "
        "sparklines, bindings, classes as the NSA chose them and as the PREM workers enforce "
        "them, the decision log), updated live. Users log in with a password from the "
        "settings.",
    )
    actions = console.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = actions.add_parser(
        "run",
        help="subscribe to the bus and serve the pages",
        description="Subscribe read-only to link metrics and state, binding events, decisions, "
        "policy documents and statuses, presences and dead letters, and serve the console on "
        "`listen` (default 127.0.0.1:8080). Settings: the [console] table (listen, users with "
        "a role and a password_hash, history, intervals) and [broker].",
    )
    service_options(run)
    run.add_argument("--check", action="store_true", help="validate the settings and exit")
    run.set_defaults(func=_run)
    hashing = actions.add_parser(
        "hash-password",
        help="print the password_hash of a console user (asks, or reads one line of stdin)",
        description="Print a PBKDF2-SHA256 hash of a password for [console.users.NAME] "
        "password_hash, in the SOAP gateway's callers' form.",
    )
    hashing.set_defaults(func=_hash_password)
