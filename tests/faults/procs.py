"""Real service processes for the fault and observability tests: PREM workers, the gateway.

Each process logs JSON lines (`--log-json`) into its own file, so a test can both show the log
when it fails and check that every line is a JSON record carrying the node id.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from labs.prem import worker_argv
from services import netns
from services.process import stop


def prem_config(
    path: Path,
    topic_root: str,
    *,
    backend: str,
    broker_port: int = 1883,
    node: str = "ha1",
    role: str = "ha",
    interfaces: tuple[str | None, ...] = (None, None),
    table_base: int = 1000,
    metrics_port: int | None = None,
    extra: str = "",
) -> Path:
    """A PREM worker's settings file (state file next to it), BIDs 1.. with `interfaces`."""
    bids = ", ".join(
        f'{{ bid = {i} , interface = "{name}" }}' if name else f"{{ bid = {i} }}"
        for i, name in enumerate(interfaces, start=1)
    )
    metrics = f'metrics_listen = "127.0.0.1:{metrics_port}"\n' if metrics_port else ""
    path.write_text(
        "[prem]\n"
        f'node = "{node}"\nrole = "{role}"\nmobile_router = "mr1"\nbackend = "{backend}"\n'
        f"table_base = {table_base}\n"
        f'state_file = "{path.with_suffix(".state.json")}"\n'
        f"bids = [{bids}]\n{metrics}{extra}"
        "[broker]\n"
        f"port = {broker_port}\n"
        f'topic_root = "{topic_root}"\n'
        "session_expiry_s = 600\n",
        encoding="utf-8",
    )
    return path


@dataclass
class Service:
    """One service process, restartable, its output appended to `log`."""

    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = field(default=0)

    def start(self) -> subprocess.Popen[bytes]:
        """Start (again); the log keeps every run's lines."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.starts += 1
        return self.proc

    @property
    def pid(self) -> int:
        """The running process's id."""
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        """Started and not ended."""
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean-up, no goodbye (a crash or an OOM kill)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 10 s; the exit status (None when never started)."""
        return None if self.proc is None else stop(self.proc)

    def text(self) -> str:
        """Everything logged so far."""
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    def records(self) -> list[dict[str, object]]:
        """The log as JSON records; fails on any line that is not one."""
        records = []
        for line in self.text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise AssertionError(f"not a JSON log line: {line!r}") from exc
        return records


def prem_worker(config: Path, netns_name: str, log: Path) -> Service:
    """`multinet prem run --config F --netns NS --log-json`."""
    return Service([*worker_argv(config, netns_name), "--log-json"], log)


def gateway(config: Path, log: Path) -> Service:
    """`multinet soap-gateway --config F --log-json`."""
    argv = [sys.executable, "-m", "services.cli", "soap-gateway", "--config", str(config)]
    return Service([*argv, "--log-json"], log)


def gateway_port(service: Service, *, timeout_s: float = 30.0) -> int:
    """The SOAP port the gateway's latest start announced in its log (settings may say 0)."""
    deadline = time.monotonic() + timeout_s
    pattern = re.compile(r"serving SOAP on https?://[^:]+:(\d+)/")
    while time.monotonic() < deadline:
        found = pattern.findall(service.text())
        if len(found) >= service.starts:
            return int(found[-1])
        if not service.alive():
            break
        time.sleep(0.05)
    raise AssertionError(f"the gateway did not start:\n{service.text()[-3000:]}")


def bare_node(namespace: str, table_base: int = 1000, bids: int = 2) -> str:
    """Make `namespace` a node whose BIDs are all usable: each BID table has a route (a BID
    without an interface is judged by its table alone), over a veth pair kept up."""
    netns.run(namespace, ["ip", "link", "add", "m0", "type", "veth", "peer", "name", "m1"])
    for link in ("m0", "m1"):
        netns.run(namespace, ["ip", "link", "set", link, "up"])
    for bid in range(1, bids + 1):
        table = str(table_base + bid)
        netns.run(namespace, ["ip", "route", "add", "default", "dev", "m0", "table", table])
    return namespace


def gateway_config(
    path: Path,
    topic_root: str,
    *,
    broker_port: int = 1883,
    ack_deadline_s: float = 10.0,
    metrics_port: int | None = None,
) -> Path:
    """A gateway's settings file: any free SOAP port, mobile router mr1 (HA ha1, MR mr1)."""
    metrics = f'metrics_listen = "127.0.0.1:{metrics_port}"\n' if metrics_port else ""
    path.write_text(
        "[soap_gateway]\n"
        f"port = 0\nack_deadline_s = {ack_deadline_s}\n{metrics}"
        'mobile_routers = [{ id = "mr1", ha_node = "ha1", mr_node = "mr1" }]\n'
        "[broker]\n"
        f"port = {broker_port}\n"
        f'topic_root = "{topic_root}"\n',
        encoding="utf-8",
    )
    return path
