"""Entry point of the MCoA agent: `multinet mcoa-agent --role mr|ha --config FILE [--netns NS]`.

`main` loads the settings and calls `run`; it can run under `ip netns exec` or with --netns.
SIGTERM and
SIGINT stop the loop cleanly (the MR then deregisters, both remove their kernel state); a
SIGKILL leaves the bindings to expire at the HA, which is what soft state is for.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from services import netns
from services.contracts.errors import ConfigError, InvalidInput, KernelError, Problem
from services.contracts.settings import apply_env, read_file, validate_section
from services.mcoa.config import McoaSettings
from services.mcoa.ha import HaAgent
from services.mcoa.mr import MrAgent
from services.mcoa.stopper import Stopper

SECTION = "mcoa"


def load(path: Path, role: str | None = None) -> McoaSettings:
    """The `[mcoa]` section of a settings file; `role`, when given, must match it."""
    settings = validate_section(McoaSettings, apply_env(read_file(path)), SECTION)
    if role is not None and settings.role != role:
        raise ConfigError([Problem(f"--role {role} but the file says {settings.role}")])
    return settings


def run(settings: McoaSettings, netns_name: str | None, stopper: Stopper | None = None) -> None:
    """Run the agent of `settings.role` (in `netns_name` if given) until SIGTERM or `stopper`.

    Signal handlers are installed only when no `stopper` is passed (the main-thread case).
    """
    if netns_name is not None:
        netns.enter(netns_name)
    own = stopper is None
    stop = Stopper() if stopper is None else stopper
    if own:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda _signum, _frame: stop.stop())
    try:
        agent = MrAgent(settings) if settings.role == "mr" else HaAgent(settings)
        agent.run(stop)
    finally:
        if own:
            stop.close()


def main(config: Path, role: str | None, netns_name: str | None, *, log_level: str) -> int:
    """`multinet mcoa-agent`: exit codes 2 (config) and 1 (kernel); see services/cli.py."""
    from services import logsetup

    try:
        settings = load(config, role)
    except InvalidInput as exc:
        for problem in exc.problems:
            print(f"{config}: {problem}", file=sys.stderr)
        return 2
    logsetup.configure(settings.node, level=log_level)
    try:
        run(settings, netns_name)
    except (KernelError, PermissionError) as exc:
        print(f"node {settings.node}: mcoa agent failed: {exc}", file=sys.stderr)
        return 1
    return 0
