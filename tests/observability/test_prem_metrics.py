"""A real PREM worker (its own process, nftables in a namespace lab) exports what it does.

Driven over the real broker; every number is read from its /metrics endpoint over HTTP, as
Prometheus would, and every log line must be a JSON record carrying the node id.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from labs.prem import Lab
from services import netns
from services.contracts import policy_xml
from services.contracts.policy import Flush, Install
from services.contracts.settings import BrokerSettings
from services.ports import free_port
from services.prem.client import PolicyClient
from tests.faults.procs import Service, prem_config, prem_worker
from tests.observability.scrape import Samples, scrape, wait_scrape
from tests.prem.factories import message, udp_to

pytestmark = [pytest.mark.kernel, pytest.mark.broker]
REFUSED = "multinet_prem_messages_refused_total"


@dataclass
class Bed:
    lab: Lab
    client: PolicyClient
    worker: Service
    port: int

    def scrape(self) -> Samples:
        return scrape(self.port)


@pytest.fixture
def bed(
    make_netns: object, broker: tuple[str, int], topic_root: str, tmp_path: Path
) -> Iterator[Bed]:
    # make_netns only asserts root and iproute2 (CI turns their absence into a failure).
    lab = Lab()
    lab.build()
    port = free_port()
    config = prem_config(
        tmp_path / "prem.toml",
        topic_root,
        backend="nftables",
        interfaces=("b1", "b2"),
        table_base=lab.table_base,
        metrics_port=port,
    )
    worker = prem_worker(config, lab.router, tmp_path / "worker.log")
    client = PolicyClient(BrokerSettings(host=broker[0], port=broker[1], topic_root=topic_root))
    try:
        worker.start()
        client.wait_online("ha1", timeout_s=20)
        yield Bed(lab, client, worker, port)
    finally:
        worker.stop()
        client.close()
        lab.destroy()


def test_applies_refusals_and_fallbacks_move_the_worker_metrics(bed: Bed) -> None:
    start = wait_scrape(bed.port, lambda s: s.get("multinet_broker_connected") == 1)
    assert start["multinet_prem_enforced_version"] == 0
    assert start.labelled("multinet_service_info", service="prem", node="ha1") == 1

    video = udp_to("video", 5001, 2, fallbacks=(1,))
    install = Install(policies=(video, udp_to("voice", 5002, 1)))
    assert bed.client.deliver("ha1", policy_xml.render(message(1, install))).result == "applied"
    after = bed.scrape()
    assert after["multinet_prem_messages_applied_total"] == 1
    assert after["multinet_prem_apply_seconds_count"] == 1
    assert after["multinet_prem_enforced_version"] == 1
    assert after["multinet_prem_policies"] == 2
    assert after["multinet_prem_rules_owned"] == 4  # two policies, IPv4 and IPv6 each

    refusals = {
        "stale-version": message(1, Flush()),
        "wrong-node": message(2, Flush(), node="mr1", direction="uplink"),
        "unknown-bid": message(2, Install(policies=(udp_to("x", 1, 7),))),
    }
    for reason, document in refusals.items():
        status = bed.client.deliver("ha1", policy_xml.render(document))
        assert status.result == "refused", reason
        assert bed.scrape().labelled(REFUSED, reason=reason) == 1, reason
    assert bed.client.deliver("ha1", b"<policy-message").result == "refused"
    refused = bed.scrape()
    assert refused.labelled(REFUSED, reason="invalid-document") == 1
    assert refused["multinet_prem_messages_applied_total"] == 1
    assert refused["multinet_prem_enforced_version"] == 1

    netns.run(bed.lab.receiver, ["ip", "link", "set", "d2", "down"])
    assert bed.client.next_status("ha1").result == "fallback"
    moved = bed.scrape()
    assert (moved["multinet_prem_fallbacks_total"], moved["multinet_prem_fallbacks_active"]) == (
        1,
        1,
    )
    netns.run(bed.lab.receiver, ["ip", "link", "set", "d2", "up"])
    assert bed.client.next_status("ha1").result == "fallback"
    back = bed.scrape()
    assert (back["multinet_prem_fallbacks_total"], back["multinet_prem_fallbacks_active"]) == (2, 0)

    assert bed.worker.stop() == 0
    records = bed.worker.records()
    assert records
    assert {record["node"] for record in records} == {"ha1"}
