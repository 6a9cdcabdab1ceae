"""Scheme 2 of the paper: the HA enforces a symmetric downlink set and hands the MR the mirror.

Two real workers (HA in the lab's router namespace, MR in a namespace of its own, both on the
nftables back end) and the real broker; the MR's kernel is read back with `nft`.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from labs.prem import Lab, worker_argv, write_config
from services import netns
from services.contracts import policy_xml
from services.contracts.policy import Install
from services.contracts.settings import BrokerSettings
from services.prem.client import PolicyClient
from tests.prem.factories import message, udp_to

pytestmark = [pytest.mark.kernel, pytest.mark.broker]


def _mr_config(path: Path, topic_root: str) -> Path:
    config = path / "prem-mr.toml"
    config.write_text(
        "[prem]\n"
        'node = "mr1"\nrole = "mr"\nmobile_router = "mr1"\nbackend = "nftables"\n'
        f'state_file = "{path / "mr-state.json"}"\n'
        "bids = [{ bid = 1 }, { bid = 2 }]\n"
        f'[broker]\ntopic_root = "{topic_root}"\nsession_expiry_s = 600\n',
        encoding="utf-8",
    )
    return config


def test_symmetric_downlink_reaches_the_mr_mirrored(
    broker: tuple[str, int],
    topic_root: str,
    tmp_path: Path,
    make_netns: Callable[[str], str],
) -> None:
    lab = Lab()
    lab.build()
    mr_ns = make_netns("mr")
    ha_config = write_config(lab, tmp_path, "nftables", topic_root)
    ha_config.write_text(ha_config.read_text().replace("[prem]\n", '[prem]\npeer_node = "mr1"\n'))
    mr_config = _mr_config(tmp_path, topic_root)
    client = PolicyClient(BrokerSettings(host=broker[0], port=broker[1], topic_root=topic_root))
    procs = []
    try:
        with (tmp_path / "ha.log").open("wb") as ha_log, (tmp_path / "mr.log").open("wb") as mr_log:
            procs.append(
                subprocess.Popen(
                    worker_argv(ha_config, lab.router), stdout=ha_log, stderr=subprocess.STDOUT
                )
            )
            procs.append(
                subprocess.Popen(
                    worker_argv(mr_config, mr_ns), stdout=mr_log, stderr=subprocess.STDOUT
                )
            )
            client.wait_online("ha1", timeout_s=20)
            client.wait_online("mr1", timeout_s=20)
            client.watch("mr1")
            down = message(1, Install(policies=(udp_to("video", 5001, 2),)))
            document = policy_xml.render(down.model_copy(update={"symmetric": True}))
            ha_status = client.deliver("ha1", document, timeout_s=15)
            mr_status = client.next_status("mr1", timeout_s=15)
        assert (ha_status.result, ha_status.version) == ("applied", 1)
        assert (mr_status.result, mr_status.version, mr_status.direction.value) == (
            "applied",
            1,
            "uplink",
        )
        mr_rules = netns.run(mr_ns, ["nft", "list", "table", "inet", "multinet_prem"])
        ha_rules = netns.run(lab.router, ["nft", "list", "table", "inet", "multinet_prem"])
        assert "th dport" in ha_rules
        assert "th sport" in mr_rules, "the MR matches the mirrored flow: source port 5001"
        assert "th dport" not in mr_rules
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        client.close()
        lab.destroy()
