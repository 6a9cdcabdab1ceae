"""The delivery chain the NSA's end-to-end tests run on: the real SOAP gateway (in-process,
HTTP Basic), two real PREM workers (memory back end, each a process in a network namespace of
its own) and a `BusDriver` playing the monitor and mobility_events, all on one broker.

What the workers hold is read from their own state files (what they acknowledged and would
enforce), never from the NSA.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labs.prem import worker_argv
from services import netns
from services.contracts.policy import Forward
from services.contracts.settings import BrokerSettings
from services.prem.core.policyset import DesiredState
from services.process import stop
from services.soap_gateway.config import GatewaySettings
from services.soap_gateway.passwords import hash_password
from services.soap_gateway.server import GatewayServer
from tests.nsa.busbed import BusDriver, tail

MR, HA_NODE, MR_NODE = "mr1", "ha1", "mr1"
ROUTERS = [{"id": MR, "ha_node": HA_NODE, "mr_node": MR_NODE}]
PASSWORD = "nsa-test-password"
#: The workers' BID tables (any base will do: the memory back end touches no table).
TABLE_BASE = 3000


def worker_config(workdir: Path, node: str, role: str, broker: BrokerSettings) -> Path:
    """A memory-back-end worker for mr1 with BIDs 1 and 2, on `broker`."""
    config = workdir / f"prem-{node}.toml"
    config.write_text(
        f'[prem]\nnode = "{node}"\nrole = "{role}"\nmobile_router = "{MR}"\n'
        f'backend = "memory"\ntable_base = {TABLE_BASE}\n'
        f'state_file = "{workdir / f"{node}-state.json"}"\n'
        "bids = [{ bid = 1 }, { bid = 2 }]\n"
        f'[broker]\nhost = "{broker.host}"\nport = {broker.port}\n'
        f'topic_root = "{broker.topic_root}"\nsession_expiry_s = 600\n',
        encoding="utf-8",
    )
    return config


def node_namespace(make_netns: Callable[[str], str], role: str) -> str:
    """A bare namespace whose BID tables have a route, so both BIDs count as usable."""
    name = make_netns(role)
    netns.run(name, ["ip", "link", "add", "x0", "type", "veth", "peer", "name", "x1"])
    for link in ("x0", "x1"):
        netns.run(name, ["ip", "link", "set", link, "up"])
    for table in (TABLE_BASE + 1, TABLE_BASE + 2):
        netns.run(name, ["ip", "route", "add", "default", "dev", "x0", "table", str(table)])
    return name


@dataclass
class Chain:
    """Gateway, workers and the bus driver, with their logs."""

    workdir: Path
    driver: BusDriver
    gateway: GatewayServer
    configs: dict[str, tuple[Path, str]]  # node -> (settings, namespace)
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start_worker(self, node: str) -> None:
        config, namespace = self.configs[node]
        with (self.workdir / f"{node}.log").open("ab") as log:
            self.workers[node] = subprocess.Popen(
                worker_argv(config, namespace), stdout=log, stderr=subprocess.STDOUT
            )

    def stop_worker(self, node: str, *, lose_state: bool = False) -> None:
        """SIGTERM the node's worker; with `lose_state`, delete what it keeps on disk too."""
        stop(self.workers[node])
        if lose_state:
            (self.workdir / f"{node}-state.json").unlink()

    def soap_link(self) -> dict[str, Any]:
        """The NSA's `gateway` settings table for this chain's gateway."""
        return {
            "mode": "soap",
            "url": f"http://127.0.0.1:{self.gateway.port}/",
            "username": "nsa",
            "password": PASSWORD,
            "call_timeout_s": 10.0,
        }

    def held(self, node: str) -> DesiredState | None:
        path = self.workdir / f"{node}-state.json"
        if not path.exists():
            return None
        return DesiredState.model_validate_json(path.read_bytes())

    def bid(self, node: str) -> int | None:
        """The BID the node's video policy forwards to (None: no such policy)."""
        state = self.held(node)
        policies = {} if state is None else state.by_id()
        policy = policies.get("video.0")
        return (
            policy.action.bid if policy is not None and isinstance(policy.action, Forward) else None
        )

    def action(self, node: str) -> object:
        """The action of the node's video policy (None: no such policy)."""
        state = self.held(node)
        policy = None if state is None else state.by_id().get("video.0")
        return None if policy is None else policy.action

    def both_on(self, bid: int) -> Callable[[], bool]:
        return lambda: self.bid(HA_NODE) == bid and self.bid(MR_NODE) == bid

    def logs(self) -> str:
        return tail(*sorted(self.workdir.glob("*.log")))


@contextmanager
def running_chain(
    broker: BrokerSettings, workdir: Path, make_netns: Callable[[str], str]
) -> Iterator[Chain]:
    """Start the gateway, both workers and the driver (ticking) on `broker`; stop them all."""
    gateway = GatewayServer(
        GatewaySettings.model_validate(
            {
                "port": 0,
                "ack_deadline_s": 3.0,
                "mobile_routers": ROUTERS,
                "callers": [
                    {
                        "name": "nsa",
                        "password_hash": hash_password(PASSWORD, iterations=1000),
                        "mobile_routers": "*",
                    }
                ],
            }
        ),
        broker,
    )
    configs = {
        HA_NODE: (worker_config(workdir, HA_NODE, "ha", broker), node_namespace(make_netns, "ha")),
        MR_NODE: (worker_config(workdir, MR_NODE, "mr", broker), node_namespace(make_netns, "mr")),
    }
    bed = Chain(workdir, BusDriver(broker), gateway, configs)
    try:
        gateway.start()
        for node in configs:
            bed.start_worker(node)
        bed.driver.start_ticking()
        yield bed
    finally:
        for proc in bed.workers.values():
            stop(proc)
        bed.driver.close()
        gateway.stop()
