"""A metrics port that cannot be bound stops a service at start with a clear message.

The endpoint is opened first, before the broker connection and the node's sockets, so neither
a broker nor a namespace is needed to see it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield int(sock.getsockname()[1])


def _run(command: str, config: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "services.cli", command, "--config", str(config)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


#: command, its settings with a {listen} placeholder, the node its message names.
SERVICES = {
    "monitor": (
        '[monitor]\nnode = "mr1"\nmetrics_listen = "{listen}"\n'
        'links = [{{ interface = "lo", bid = 1, technology = "ethernet" }}]\n'
        "[broker]\nport = 1\n",
        "mr1",
    ),
    "mobility-events": (
        '[mobility_events]\nnode = "ha1"\nmetrics_listen = "{listen}"\n'
        'mobile_routers = [{{ id = "mr1", prefixes = ["2001:db8:aaaa::/48"] }}]\n'
        "[broker]\nport = 1\n",
        "ha1",
    ),
    "mcoa-agent": (
        '[mcoa]\nnode = "ha1"\nrole = "ha"\nmetrics_listen = "{listen}"\n'
        '[mcoa.ha]\nha_address = "2001:db8:100::1"\n'
        '[[mcoa.ha.mobile_routers]]\nhome_address = "2001:db8:100::2"\n'
        'prefixes = ["2001:db8:ff::/64"]\n',
        "ha1",
    ),
}


@pytest.mark.parametrize("command", list(SERVICES))
def test_a_service_refuses_a_taken_metrics_port(
    command: str, taken_port: int, tmp_path: Path
) -> None:
    settings, node = SERVICES[command]
    listen = f"127.0.0.1:{taken_port}"
    config = tmp_path / "service.toml"
    config.write_text(settings.format(listen=listen), encoding="utf-8")
    done = _run(command, config)
    assert done.returncode == 1, done.stderr
    assert f"node {node}: cannot serve metrics on {listen}: " in done.stderr
