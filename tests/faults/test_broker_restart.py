"""The broker restarts mid-run: the workers and the gateway reconnect, and no policy document
the broker acknowledged is lost.

Real processes on a broker of the test's own (persistence on, restarted on the same port): the
HA's worker (nftables in a namespace; it reaches the broker through a relay the test can cut),
the MR's worker (memory back end in a namespace) and the gateway, called with hand-written SOAP
envelopes. Connection state and enforced versions are read from each process's metrics
endpoint, the HA's rules from its kernel.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.contracts.policy import Install, Operation
from services.ports import free_port
from services.prem.readback import expected_entries, read_table
from tests.faults.broker import OwnBroker
from tests.faults.procs import (
    Service,
    bare_node,
    gateway,
    gateway_config,
    gateway_port,
    prem_config,
    prem_worker,
)
from tests.faults.proxy import Relay
from tests.faults.soap import Answer, post, scheme1
from tests.observability.scrape import Samples, wait_scrape
from tests.prem.factories import udp_to

pytestmark = [pytest.mark.kernel, pytest.mark.broker]
CONNECTED = "multinet_broker_connected"
VERSION = "multinet_prem_enforced_version"
#: Each reconnect waits at most 1, 2, 4 s ... (jittered): a restart of about a second is over
#: well within this.
RECONNECT_S = 20.0


def _policies(version: int) -> Install:
    """A different set per version: video alternates between BIDs, one more policy each time."""
    video = udp_to("video", 5001, 1 + version % 2, fallbacks=(2 - version % 2,))
    return Install(policies=(video, *(udp_to(f"p{i}", 6000 + i, 1) for i in range(version))))


@dataclass
class Deployment:
    broker: OwnBroker
    relay: Relay
    ha_namespace: str
    services: dict[str, Service]
    metrics: dict[str, int]
    soap_port: int = 0

    def call(self, operation: str, version: int, op: Operation | None = None) -> Answer:
        body = scheme1(operation, version, op or _policies(version))
        return post(self.soap_port, body, operation)

    def wait(self, role: str, check: Callable[[Samples], bool]) -> Samples:
        return wait_scrape(self.metrics[role], check, timeout_s=RECONNECT_S)

    def all_connected(self) -> None:
        for role in self.services:
            self.wait(role, lambda s: s.get(CONNECTED) == 1)

    def logs(self) -> str:
        return "\n".join(f"--- {r}\n{s.text()[-2000:]}" for r, s in self.services.items())


@pytest.fixture
def deployment(
    own_broker: OwnBroker, make_netns: Callable[[str], str], topic_root: str, tmp_path: Path
) -> Iterator[Deployment]:
    own = own_broker
    relay = Relay(own.port)
    ha_ns = bare_node(make_netns("ha"))
    mr_ns = bare_node(make_netns("mr"), table_base=3000)
    metrics = {role: free_port() for role in ("ha1", "mr1", "gateway")}
    ha = prem_config(
        tmp_path / "ha1.toml",
        topic_root,
        backend="nftables",
        broker_port=relay.port,
        metrics_port=metrics["ha1"],
    )
    mr = prem_config(
        tmp_path / "mr1.toml",
        topic_root,
        backend="memory",
        node="mr1",
        role="mr",
        table_base=3000,
        broker_port=own.port,
        metrics_port=metrics["mr1"],
    )
    gw = gateway_config(
        tmp_path / "gateway.toml",
        topic_root,
        broker_port=own.port,
        ack_deadline_s=3,
        metrics_port=metrics["gateway"],
    )
    services = {
        "ha1": prem_worker(ha, ha_ns, tmp_path / "ha1.log"),
        "mr1": prem_worker(mr, mr_ns, tmp_path / "mr1.log"),
        "gateway": gateway(gw, tmp_path / "gateway.log"),
    }
    bed = Deployment(own, relay, ha_ns, services, metrics)
    try:
        for service in services.values():
            service.start()
        bed.soap_port = gateway_port(services["gateway"])
        bed.all_connected()
        yield bed
    finally:
        for service in services.values():
            service.stop()
        relay.close()
    for role, service in services.items():
        nodes = {record["node"] for record in service.records()}
        assert nodes == {"soap-gateway" if role == "gateway" else role}, service.text()[-2000:]


def test_workers_and_gateway_reconnect_after_a_broker_restart(deployment: Deployment) -> None:
    d = deployment
    assert d.call("Install", 1).outcomes == {"ha1": "applied", "mr1": "applied"}

    d.broker.stop()
    d.wait("gateway", lambda s: s.get(CONNECTED) == 0)
    started = time.monotonic()
    refused = d.call("Install", 2)
    assert refused.fault == "Server.BusUnavailable", refused
    assert time.monotonic() - started < 2, "a call during the outage is answered at once"

    d.broker.start()
    restarted = time.monotonic()
    d.all_connected()
    print(f"all three reconnected {time.monotonic() - restarted:.1f} s after the broker returned")
    answer = d.call("Install", 2)
    assert answer.outcomes == {"ha1": "applied", "mr1": "applied"}, d.logs()
    assert read_table(d.ha_namespace).by_policy() == expected_entries(_policies(2).policies)
    assert all(s.alive() for s in d.services.values())


def test_a_document_the_broker_took_while_the_worker_was_away_survives_a_restart(
    deployment: Deployment,
) -> None:
    d = deployment
    assert d.call("Install", 1).outcomes == {"ha1": "applied", "mr1": "applied"}

    # The HA's worker loses its connection; the broker keeps its session (QoS 1 subscription).
    d.relay.cut()
    d.wait("ha1", lambda s: s.get(CONNECTED) == 0)
    # The gateway publishes both documents and the broker acknowledges them (PUBACK); the HA
    # cannot answer in time, so the caller hears "not-reached" for it, not "applied".
    answer = d.call("Install", 2)
    assert answer.outcomes == {"ha1": "not-reached", "mr1": "applied"}, d.logs()

    # The broker restarts while the document waits in the HA worker's session.
    d.broker.restart()
    assert d.broker.persistence_file.exists()
    d.wait("gateway", lambda s: s.get(CONNECTED) == 1)
    d.relay.restore()
    d.wait("ha1", lambda s: s.get(CONNECTED) == 1 and s.get(VERSION) == 2)
    assert read_table(d.ha_namespace).by_policy() == expected_entries(_policies(2).policies)
    # And the bus works end to end again.
    assert d.call("Install", 3).outcomes == {"ha1": "applied", "mr1": "applied"}


@pytest.mark.parametrize(
    ("saving", "kept"),
    [
        ("autosave_interval 60\n", False),  # as shipped: saved every 60 s and on shutdown
        ("autosave_on_changes true\nautosave_interval 1\n", True),  # saved on every change
    ],
    ids=["periodic-save", "save-on-change"],
)
def test_a_broker_crash_keeps_queued_documents_only_when_it_saves_on_every_change(
    deployment: Deployment, saving: str, kept: bool
) -> None:
    d = deployment
    d.broker.extra = saving
    d.broker.restart()
    d.all_connected()
    assert d.call("Install", 1).outcomes == {"ha1": "applied", "mr1": "applied"}
    d.relay.cut()
    d.wait("ha1", lambda s: s.get(CONNECTED) == 0)
    assert d.call("Install", 2).outcomes == {"ha1": "not-reached", "mr1": "applied"}

    d.broker.kill()  # SIGKILL: no save on the way out
    d.broker.start()
    d.relay.restore()
    if kept:
        d.wait("ha1", lambda s: s.get(CONNECTED) == 1 and s.get(VERSION) == 2)
        return
    # Lost with the session: the worker reconnects, resubscribes and keeps version 1. What the
    # caller was told stays true (ha1 "not-reached"); the next delivery repairs the node.
    d.wait("ha1", lambda s: s.get(CONNECTED) == 1)
    assert d.call("Install", 3).outcomes == {"ha1": "applied", "mr1": "applied"}
    # Version 2 would have been handled before 3 (one session, in order): it never came. The
    # worker answers before it updates its metrics, so they are read once they show version 3
    # (the applied count is raised before the version gauge is set).
    samples = d.wait("ha1", lambda s: s.get(VERSION) == 3)
    assert samples["multinet_prem_messages_applied_total"] == 2
    assert read_table(d.ha_namespace).by_policy() == expected_entries(_policies(3).policies)
