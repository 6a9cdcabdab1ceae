"""Entry point of the MCoA agent: `multinet mcoa-agent --role mr|ha --config FILE [--netns NS]`.

`main` loads the settings and calls `run`; it can run under `ip netns exec` or with --netns.
SIGTERM and
SIGINT stop the loop cleanly (the MR then deregisters, both remove their kernel state); a
SIGKILL leaves the bindings to expire at the HA, which is what soft state is for.

An HA with `publish_events` also reads the top-level `[broker]` table and publishes its own
binding events; its bus connection is made before entering --netns, from the namespace the
agent was started in (the management side). So is the Prometheus endpoint (`metrics_listen`),
opened first of all: an address that cannot be bound stops the agent at once.
"""

from __future__ import annotations

import sys
from pathlib import Path

from services import capabilities, netns
from services.contracts.errors import ConfigError, InvalidInput, KernelError, Problem
from services.contracts.settings import BrokerSettings, apply_env, read_file, validate_section
from services.mcoa.config import McoaSettings
from services.mcoa.ha import BusPublisher, HaAgent
from services.mcoa.metrics import McoaHaMetrics
from services.mcoa.mr import MrAgent
from services.metrics import MetricsListenError
from services.runtime import on_signals
from services.wakeup import Stopper

SECTION = "mcoa"
BROKER_SECTION = "broker"


def load(path: Path, role: str | None = None) -> McoaSettings:
    """The `[mcoa]` section of a settings file; `role`, when given, must match it."""
    settings = validate_section(McoaSettings, apply_env(read_file(path)), SECTION)
    if role is not None and settings.role != role:
        raise ConfigError([Problem(f"--role {role} but the file says {settings.role}")])
    return settings


def load_broker(path: Path) -> BrokerSettings:
    """The `[broker]` table of a settings file (defaults when absent)."""
    return validate_section(BrokerSettings, apply_env(read_file(path)), BROKER_SECTION)


def run(
    settings: McoaSettings,
    netns_name: str | None,
    stopper: Stopper | None = None,
    broker: BrokerSettings | None = None,
) -> None:
    """Run the agent of `settings.role` (in `netns_name` if given) until SIGTERM or `stopper`.

    Signal handlers are installed only when no `stopper` is passed (the main-thread case).
    The metrics endpoint (if `metrics_listen`; MetricsListenError when it cannot be bound)
    and, for an HA with `publish_events`, the bus connection to `broker` (defaults if None)
    are opened first, while still in the namespace the agent was started in; only then does
    it enter `netns_name`.
    """
    # First of all, what this kernel can build: a missing kind ends the agent at once, naming
    # the kernel option and what is there instead (MissingCapability, a KernelError).
    caps = capabilities.probe(capabilities.PIPE_KINDS)
    agent: MrAgent | HaAgent
    publisher: BusPublisher | None = None
    if settings.role == "mr":
        agent = MrAgent(settings, kind=capabilities.choose_pipe_kind(settings.pipe, caps))
    else:
        offered = capabilities.offered_pipe_kinds(settings.pipe, caps)
        metrics = McoaHaMetrics(settings.node)
        if settings.ha is not None and settings.ha.publish_events:
            publisher = BusPublisher(settings.node, broker or BrokerSettings(), metrics)
        # The constructors touch neither the kernel nor the network.
        agent = HaAgent(settings, offered=offered, events=publisher, metrics=metrics)
    agent.metrics.serve(settings.metrics_listen)
    try:
        if publisher is not None:
            publisher.start()
        if netns_name is not None:
            netns.enter(netns_name)
        own = stopper is None
        stop = Stopper() if stopper is None else stopper
        if own:
            on_signals(settings.node, stop.stop)
        try:
            agent.run(stop)
        finally:
            if own:
                stop.close()
    finally:
        if publisher is not None:
            publisher.close()
        agent.metrics.close()


def main(
    config: Path,
    role: str | None,
    netns_name: str | None,
    *,
    log_level: str,
    json_logs: bool = False,
) -> int:
    """`multinet mcoa-agent`: exit codes 2 (config) and 1 (kernel); see services/cli.py."""
    from services import logsetup

    try:
        settings = load(config, role)
        broker = load_broker(config)
    except InvalidInput as exc:
        for problem in exc.problems:
            print(f"{config}: {problem}", file=sys.stderr)
        return 2
    logsetup.configure(settings.node, level=log_level, json_lines=json_logs)
    try:
        run(settings, netns_name, broker=broker)
    except MetricsListenError as exc:
        print(f"node {settings.node}: {exc}", file=sys.stderr)
        return 1
    except (KernelError, PermissionError) as exc:
        print(f"node {settings.node}: mcoa agent failed: {exc}", file=sys.stderr)
        return 1
    return 0
