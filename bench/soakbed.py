"""The soak benchmark's deployment: a broker, three namespace labs and five service processes.

- PREM lab (`labs/prem.py`): the HA's worker enforces with nftables in its router
  namespace; BID 2's link (b2) is the one that flaps.
- A bare namespace for the MR's worker (memory back end; both BID tables have a route).
- The gateway (`multinet soap-gateway`), which every policy change goes through.
- Monitor lab (`labs/monitor.py`): the monitor probes two links; link 1 flaps.
- Mobility lab (`labs/mobility_events.py`): mobility_events captures in the HA
  namespace while the bench sends Binding Updates and Acknowledgements.

Every service runs as its own process with `--log-json` and a metrics endpoint; every command
is an argument list.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from labs.mobility_events import MobilityLab
from labs.mobility_events import write_config as mobility_config
from labs.monitor import MonitorLab
from labs.prem import Lab, worker_argv
from services import netns
from services.contracts.settings import BrokerSettings
from services.ports import free_port
from services.process import stop

MR_TABLE_BASE = 3000
ROLES = ("prem-ha", "prem-mr", "gateway", "monitor", "mobility-events")


@dataclass
class Proc:
    """One service process and its metrics port."""

    role: str
    popen: subprocess.Popen[bytes]
    metrics_port: int
    log: Path


@dataclass
class Bed:
    """Everything the soak drives and watches."""

    workdir: Path
    broker_port: int
    topic_root: str = field(default_factory=lambda: f"soak-{uuid.uuid4().hex[:8]}/multinet/v1")
    prem_lab: Lab = field(default_factory=Lab)
    monitor_lab: MonitorLab = field(default_factory=lambda: MonitorLab(2))
    mobility_lab: MobilityLab = field(default_factory=MobilityLab)
    mr_namespace: str = field(default_factory=lambda: f"mns-mr-{uuid.uuid4().hex[:6]}")
    procs: dict[str, Proc] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=lambda: {role: free_port() for role in ROLES})
    soap_port: int = 0

    def build(self, stack: ExitStack) -> None:
        """Build the labs and start every service; everything is undone by `stack`."""
        self.prem_lab.build()
        stack.callback(self.prem_lab.destroy)
        self.monitor_lab.destroy()
        self.monitor_lab.build()
        stack.callback(self.monitor_lab.destroy)
        self.mobility_lab.build()
        stack.callback(self.mobility_lab.destroy)
        _bare_namespace(self.mr_namespace)
        stack.callback(netns.delete, self.mr_namespace)
        python = [sys.executable, "-m", "services.cli"]
        ha = self._prem("ha1", "ha", "nftables", "b1", "b2")
        mr = self._prem("mr1", "mr", "memory", None, None)
        commands = {
            "prem-ha": worker_argv(ha, self.prem_lab.router),
            "prem-mr": worker_argv(mr, self.mr_namespace),
            "gateway": [*python, "soap-gateway", "--config", str(self._gateway())],
            "monitor": [
                *python,
                "monitor",
                "--config",
                str(self._monitor()),
                "--netns",
                self.monitor_lab.mr,
            ],
            "mobility-events": [
                *python,
                "mobility-events",
                "--config",
                str(self._mobility()),
                "--netns",
                self.mobility_lab.ha,
            ],
        }
        for role, argv in commands.items():
            self.procs[role] = self._start(role, [*argv, "--log-json"], stack)
        self.soap_port = _announced_port(self.procs["gateway"])

    def _start(self, role: str, argv: list[str], stack: ExitStack) -> Proc:
        log = self.workdir / f"{role}.log"
        port = self.ports[role]
        with log.open("wb") as out:
            popen = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        stack.callback(stop, popen)
        return Proc(role, popen, port, log)

    def _broker_table(self) -> str:
        return f'[broker]\nport = {self.broker_port}\ntopic_root = "{self.topic_root}"\n'

    def _prem(
        self, node: str, role: str, backend: str, link1: str | None, link2: str | None
    ) -> Path:
        table_base = self.prem_lab.table_base if role == "ha" else MR_TABLE_BASE
        bids = ", ".join(
            f'{{ bid = {bid}, interface = "{link}" }}' if link else f"{{ bid = {bid} }}"
            for bid, link in ((1, link1), (2, link2))
        )
        path = self.workdir / f"prem-{node}.toml"
        path.write_text(
            f'[prem]\nnode = "{node}"\nrole = "{role}"\nmobile_router = "mr1"\n'
            f'backend = "{backend}"\ntable_base = {table_base}\nbids = [{bids}]\n'
            f'state_file = "{self.workdir / (node + "-state.json")}"\n'
            f'metrics_listen = "127.0.0.1:{self.ports["prem-" + role]}"\n'
            "remove_on_exit = true\n" + self._broker_table() + "session_expiry_s = 600\n",
            encoding="utf-8",
        )
        return path

    def _gateway(self) -> Path:
        path = self.workdir / "gateway.toml"
        path.write_text(
            "[soap_gateway]\nport = 0\nack_deadline_s = 30\n"
            f'metrics_listen = "127.0.0.1:{self.ports["gateway"]}"\n'
            'mobile_routers = [{ id = "mr1", ha_node = "ha1", mr_node = "mr1" }]\n'
            + self._broker_table(),
            encoding="utf-8",
        )
        return path

    def _monitor(self) -> Path:
        broker = BrokerSettings(port=self.broker_port, topic_root=self.topic_root)
        return self.monitor_lab.config(
            self.workdir / "monitor.toml",
            broker,
            interval_s=0.2,
            probe_timeout_s=0.5,
            metrics_listen=f"127.0.0.1:{self.ports['monitor']}",
        )

    def _mobility(self) -> Path:
        path = mobility_config(self.workdir, self.topic_root)
        text = path.read_text(encoding="utf-8")
        text = text.replace(
            "[mobility_events]\n",
            f'[mobility_events]\nmetrics_listen = "127.0.0.1:{self.ports["mobility-events"]}"\n',
        ).replace("[broker]\n", f"[broker]\nport = {self.broker_port}\n")
        path.write_text(text, encoding="utf-8")
        return path


def _bare_namespace(name: str) -> None:
    """A namespace where both BID tables of the MR's worker have a route (both usable)."""
    netns.create(name)
    netns.run(name, ["ip", "link", "add", "m0", "type", "veth", "peer", "name", "m1"])
    for link in ("m0", "m1"):
        netns.run(name, ["ip", "link", "set", link, "up"])
    for bid in (1, 2):
        table = str(MR_TABLE_BASE + bid)
        netns.run(name, ["ip", "route", "add", "default", "dev", "m0", "table", table])


def _announced_port(proc: Proc, timeout_s: float = 30.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = re.search(r"serving SOAP on https?://[^:]+:(\d+)/", proc.log.read_text())
        if found:
            return int(found.group(1))
        if proc.popen.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"the gateway did not start:\n{proc.log.read_text()[-3000:]}")
