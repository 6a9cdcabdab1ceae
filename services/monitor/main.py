"""`multinet monitor` and `multinet probe-responder`: load and check settings, then run.

Kept apart from the event loop so that the command-line concerns (messages, exit codes) do not
mix with the loop's.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from services import netns
from services.contracts.errors import InvalidInput, KernelError
from services.contracts.settings import ServiceFile, load_service_file
from services.metrics import MetricsListenError
from services.monitor.config import MonitorSettings
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
