"""The whole chain on the real broker: metrics as a monitor publishes them -> `multinet nsa
run` decides -> its zeep client calls the real SOAP gateway (HTTP Basic) -> two real PREM
workers (memory back end, each in a network namespace of its own) apply.

What the workers hold is read from their own state files (what they acknowledged and would
enforce), not from the NSA.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from services import netns
from services.contracts import policy_xml
from services.contracts.messages import BindingEventKind
from services.contracts.policy import Forward
from services.contracts.settings import BrokerSettings
from services.nsa import Reason
from services.prem.demo import worker_argv
from services.prem.policyset import DesiredState
from services.soap_gateway.auth import hash_password
from services.soap_gateway.config import GatewaySettings
from services.soap_gateway.server import GatewayServer
from tests.nsa.busbed import BusDriver, nsa_process, stop, tail, wait_until, write_settings

pytestmark = [pytest.mark.kernel, pytest.mark.broker]
MR, HA_NODE, MR_NODE = "mr1", "ha1", "mr1"
PASSWORD = "nsa-test-password"


def worker_config(workdir: Path, node: str, role: str, topic_root: str, base: int) -> Path:
    """A memory-back-end worker for mr1 with BIDs 1 and 2."""
    config = workdir / f"prem-{node}.toml"
    config.write_text(
        f'[prem]\nnode = "{node}"\nrole = "{role}"\nmobile_router = "{MR}"\n'
        f'backend = "memory"\ntable_base = {base}\n'
        f'state_file = "{workdir / f"{node}-state.json"}"\n'
        "bids = [{ bid = 1 }, { bid = 2 }]\n"
        f'[broker]\ntopic_root = "{topic_root}"\nsession_expiry_s = 600\n',
        encoding="utf-8",
    )
    return config


def node_namespace(make_netns: Callable[[str], str], role: str, base: int) -> str:
    """A bare namespace whose BID tables have a route, so both BIDs count as usable."""
    name = make_netns(role)
    netns.run(name, ["ip", "link", "add", "x0", "type", "veth", "peer", "name", "x1"])
    for link in ("x0", "x1"):
        netns.run(name, ["ip", "link", "set", link, "up"])
    for table in (base + 1, base + 2):
        netns.run(name, ["ip", "route", "add", "default", "dev", "x0", "table", str(table)])
    return name


@dataclass
class Chain:
    """Gateway, workers, NSA process and the bus driver, with their logs."""

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

    def both_on(self, bid: int) -> Callable[[], bool]:
        return lambda: self.bid(HA_NODE) == bid and self.bid(MR_NODE) == bid

    def logs(self) -> str:
        return tail(*sorted(self.workdir.glob("*.log")))


@pytest.fixture
def chain(
    broker: tuple[str, int],
    topic_root: str,
    tmp_path: Path,
    make_netns: Callable[[str], str],
) -> Iterator[Chain]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    broker_settings = BrokerSettings(host=broker[0], port=broker[1], topic_root=topic_root)
    gateway = GatewayServer(
        GatewaySettings.model_validate(
            {
                "port": 0,
                "ack_deadline_s": 3.0,
                "mobile_routers": [{"id": MR, "ha_node": HA_NODE, "mr_node": MR_NODE}],
                "callers": [
                    {
                        "name": "nsa",
                        "password_hash": hash_password(PASSWORD, iterations=1000),
                        "mobile_routers": "*",
                    }
                ],
            }
        ),
        broker_settings,
    )
    driver = BusDriver(broker_settings)
    configs = {
        HA_NODE: (
            worker_config(tmp_path, HA_NODE, "ha", topic_root, 3000),
            node_namespace(make_netns, "ha", 3000),
        ),
        MR_NODE: (
            worker_config(tmp_path, MR_NODE, "mr", topic_root, 3000),
            node_namespace(make_netns, "mr", 3000),
        ),
    }
    bed = Chain(tmp_path, driver, gateway, configs)
    try:
        gateway.start()
        for node in configs:
            bed.start_worker(node)
        driver.start_ticking()
        yield bed
    finally:
        for proc in bed.workers.values():
            stop(proc)
        driver.close()
        gateway.stop()


def test_metrics_to_decision_to_gateway_to_both_workers(chain: Chain, tmp_path: Path) -> None:
    driver = chain.driver
    config = write_settings(
        tmp_path / "nsa.yaml",
        driver.broker,
        [{"id": MR, "ha_node": HA_NODE, "mr_node": MR_NODE}],
        nsa={
            "gateway": {
                "mode": "soap",
                "url": f"http://127.0.0.1:{chain.gateway.port}/",
                "username": "nsa",
                "password": PASSWORD,
                "call_timeout_s": 10.0,
            }
        },
    )
    with nsa_process(config, tmp_path / "nsa.log") as nsa:
        # 1. A monitor reports both links, mobility events both bindings: video on BID 1.
        driver.metrics(MR_NODE, 1, rtt_ms=20.0)
        driver.metrics(MR_NODE, 2, rtt_ms=60.0)
        for bid in (1, 2):
            driver.binding(MR, bid, BindingEventKind.REGISTERED)
        wait_until(chain.both_on(1), "video on BID 1 at both workers\n" + chain.logs(), 30)

        # 2. BID 1 degrades: after the dwell time both workers move video to BID 2.
        driver.metrics(MR_NODE, 1, rtt_ms=250.0)
        wait_until(chain.both_on(2), "video on BID 2 after the dwell\n" + chain.logs(), 20)
        moved = driver.latest(MR)
        assert moved is not None
        assert moved.explanation.for_class("video").reason is Reason.DWELL_ELAPSED

        # 3. BID 2 starts a handover: video leaves it at once; registered brings it back.
        driver.metrics(MR_NODE, 1, rtt_ms=20.0)
        driver.binding(MR, 2, BindingEventKind.HANDOVER_STARTED)
        wait_until(chain.both_on(1), "video off BID 2 during its handover", 10)
        record = driver.latest(MR)
        assert record is not None
        assert record.explanation.for_class("video").reason is Reason.HANDOVER_STARTED
        driver.metrics(MR_NODE, 1, rtt_ms=250.0)
        driver.binding(MR, 2, BindingEventKind.REGISTERED)
        wait_until(chain.both_on(2), "video back on BID 2 once registered", 10)
        back = [
            d.explanation.for_class("video").reason
            for d in driver.decisions
            if d.explanation.for_class("video").chosen_bid == 2
        ]
        assert Reason.HANDOVER_COMPLETED in back

        # 4. The MR's worker restarts with nothing (state lost): its hello gets a full
        #    Install, and both workers converge on the NSA's assignment again.
        before = len(driver.documents)
        stop(chain.workers[MR_NODE])
        (tmp_path / f"{MR_NODE}-state.json").unlink()
        chain.start_worker(MR_NODE)
        wait_until(chain.both_on(2), "the restarted worker holding video on BID 2 again", 20)
        later = [policy_xml.parse(doc) for node, doc in driver.documents[before:]]
        assert any(m.node == MR_NODE and m.operation.kind == "install" for m in later), (
            "a full Install for the restarted worker"
        )
        assert nsa.poll() is None, chain.logs()
    log = (tmp_path / "nsa.log").read_text()
    assert "says hello at version 0" in log
    assert log.count("full Install next") <= 4, "announcements of applied versions are no hellos"
    assert "decision mr1 trigger" in log
