"""What the `multinet` sub-commands share, so that each service's package can hang its own
parser under the command (`add_subcommand(sub)`) without importing `services.cli`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TypeAlias

from services.contracts.errors import InvalidInput

#: The `sub` an `add_subcommand` hangs its parser on (`parser.add_subparsers()`).
SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def service_options(parser: argparse.ArgumentParser) -> None:
    """The options every long-running service command takes: its settings file and logging."""
    parser.add_argument("--config", type=Path, required=True, help="settings file (.toml/.yaml)")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    parser.add_argument("--log-json", action="store_true", help="log one JSON object per line")


def bad_file(path: Path, error: InvalidInput) -> int:
    """Print every problem of `error` with the file it is in; return the exit status of a bad
    settings file (2)."""
    for problem in error.problems:
        print(f"{path}: {problem}", file=sys.stderr)
    return 2
