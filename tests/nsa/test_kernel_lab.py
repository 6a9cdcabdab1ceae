"""A real packet's egress BID follows the NSA's decision on the nftables back end.

The HA's worker enforces with nftables in the PREM lab's router namespace
(`labs/prem.py`: sender -> router -> BID 1 on b1 / BID 2 on b2 -> the mobile
network); the MR's worker uses the memory back end in a namespace of its own. The NSA runs as
`multinet nsa run` and delivers through the real SOAP gateway. Where the flow goes is read
from the router's packet counters of b1 and b2, not from any of our processes.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from labs.prem import MNP6, Lab, send_udp, worker_argv, write_config
from services import netns
from services.contracts.messages import BindingEventKind
from services.contracts.settings import BrokerSettings
from services.process import stop
from services.soap_gateway.config import GatewaySettings
from services.soap_gateway.server import GatewayServer
from tests.nsa.busbed import BusDriver, nsa_process, tail, wait_until, write_settings
from tests.nsa.chainbed import node_namespace, worker_config

pytestmark = [pytest.mark.kernel, pytest.mark.broker]
MR, HA_NODE, MR_NODE = "mr1", "ha1", "mr1"
PACKETS = 50
PORT = 5001
#: The class, written as the MR sees its outgoing traffic: from the mobile network's port
#: 5001. The HA's downlink policy is its mirror: to the mobile network's port 5001.
STREAM = {
    "name": "stream",
    "selectors": [
        {
            "src_addr": "2001:db8:ff::/64",
            "next_header": 17,
            "src_port": {"first": PORT, "last": PORT},
        }
    ],
}


def egress(lab: Lab) -> int | None:
    """The BID link (1 or 2) that carried nearly all of a burst to the mobile network."""
    before = lab.tx_packets("b1"), lab.tx_packets("b2")
    netns.call_in(lab.sender, send_udp, MNP6, PORT, PACKETS)
    b1, b2 = lab.tx_packets("b1") - before[0], lab.tx_packets("b2") - before[1]
    if b1 >= PACKETS and b2 <= 1:
        return 1
    if b2 >= PACKETS and b1 <= 1:
        return 2
    return None


@pytest.fixture
def lab(make_netns: Callable[[str], str]) -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    made = Lab()
    made.build()
    yield made
    made.destroy()


def test_a_metrics_change_moves_a_real_packets_egress_bid(
    lab: Lab,
    broker: tuple[str, int],
    topic_root: str,
    tmp_path: Path,
    make_netns: Callable[[str], str],
) -> None:
    broker_settings = BrokerSettings(host=broker[0], port=broker[1], topic_root=topic_root)
    (tmp_path / "ha").mkdir()
    ha_config = write_config(lab, tmp_path / "ha", "nftables", topic_root)
    mr_config = worker_config(tmp_path, MR_NODE, "mr", broker_settings)
    mr_namespace = node_namespace(make_netns, "mr")
    gateway = GatewayServer(
        GatewaySettings.model_validate(
            {
                "port": 0,
                "ack_deadline_s": 3.0,
                "mobile_routers": [{"id": MR, "ha_node": HA_NODE, "mr_node": MR_NODE}],
            }
        ),
        broker_settings,
    )
    driver = BusDriver(broker_settings)
    workers: list[subprocess.Popen[bytes]] = []
    logs = [tmp_path / "ha.log", tmp_path / "mr.log", tmp_path / "nsa.log"]
    try:
        gateway.start()
        for argv, log in (
            (worker_argv(ha_config, lab.router), logs[0]),
            (worker_argv(mr_config, mr_namespace), logs[1]),
        ):
            with log.open("wb") as out:
                workers.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT))
        driver.start_ticking()
        assert egress(lab) == 1, "no policy yet: the default path is b1"
        config = write_settings(
            tmp_path / "nsa.yaml",
            broker_settings,
            [{"id": MR, "ha_node": HA_NODE, "mr_node": MR_NODE}],
            nsa={
                "profiles": [STREAM],
                "gateway": {"mode": "soap", "url": f"http://127.0.0.1:{gateway.port}/"},
            },
        )
        with nsa_process(config, logs[2]) as nsa:
            driver.metrics(MR_NODE, 1, rtt_ms=60.0)
            driver.metrics(MR_NODE, 2, rtt_ms=20.0)
            for bid in (1, 2):
                driver.binding(MR, bid, BindingEventKind.REGISTERED)
            wait_until(lambda: egress(lab) == 2, "the stream on BID 2 (b2)\n" + tail(*logs), 30)
            driver.metrics(MR_NODE, 2, rtt_ms=300.0)  # BID 2 degrades
            wait_until(lambda: driver.class_bid(MR, "stream") == 1, "the decision for BID 1")
            wait_until(lambda: egress(lab) == 1, "the stream back on BID 1 (b1)\n" + tail(*logs))
            assert nsa.poll() is None
        rules = netns.run(lab.router, ["nft", "list", "table", "inet", "multinet_prem"])
        # The mirrored (downlink) selector's /64: a masked exact key (its network address,
        # looked up with the packet's destination masked to 64 bits).
        assert "ip6 daddr & ffff:ffff:ffff:ffff::" in rules, rules
        assert "2001:db8:ff:: . " in rules, "the HA holds the mirrored (downlink) selector"
    finally:
        for proc in workers:
            stop(proc)
        driver.close()
        gateway.stop()
