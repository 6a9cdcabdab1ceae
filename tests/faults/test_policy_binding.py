"""Policies are bound to their node and version end to end: replays and misaddressed documents
are refused by the real worker, and nothing it enforces changes.

A real worker process (nftables back end in a namespace of its own) on the real broker. What is
enforced is read three ways, none through the worker: the kernel's table (`nft -j`), the
durable state file, and the worker's metrics endpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.contracts import policy_xml
from services.contracts.messages import PolicyStatus
from services.contracts.policy import Flush, Install, Policy, PolicyMessage
from services.contracts.settings import BrokerSettings
from services.ports import free_port
from services.prem.client import PolicyClient
from services.prem.readback import TableView, expected_entries, read_table
from tests.faults.procs import Service, bare_node, prem_config, prem_worker
from tests.observability.scrape import scrape
from tests.prem.factories import message, udp_to

pytestmark = [pytest.mark.kernel, pytest.mark.broker]
REFUSED = "multinet_prem_messages_refused_total"
ENFORCED = (udp_to("video", 5001, 2, fallbacks=(1,)), udp_to("voice", 5002, 1))


@dataclass
class Node:
    namespace: str
    worker: Service
    client: PolicyClient
    state_file: Path
    metrics_port: int

    def deliver(self, document: bytes | PolicyMessage, *, retain: bool = False) -> PolicyStatus:
        payload = policy_xml.render(document) if isinstance(document, PolicyMessage) else document
        if not retain:
            return self.client.deliver("ha1", payload, timeout_s=15)
        info = self.client.client.publish(
            self.client.topics.policy("ha1"), payload, qos=1, retain=True
        )
        info.wait_for_publish(10)
        return self.client.next_status("ha1", timeout_s=15)

    def kernel(self) -> TableView:
        return read_table(self.namespace)

    def refusals(self, reason: str, expected: float) -> float:
        """The refusals counted for `reason`, once they reach `expected` (or after 5 s): the
        worker counts a status right after publishing it, so a scrape the moment the status
        arrives may come a little before the count."""
        deadline = time.monotonic() + 5
        while True:
            count = scrape(self.metrics_port).labelled(REFUSED, reason=reason)
            if count == expected or time.monotonic() > deadline:
                return count
            time.sleep(0.02)


@pytest.fixture
def node(
    make_netns: Callable[[str], str], broker: tuple[str, int], topic_root: str, tmp_path: Path
) -> Iterator[Node]:
    namespace = bare_node(make_netns("ha"))
    port = free_port()
    config = prem_config(tmp_path / "prem.toml", topic_root, backend="nftables", metrics_port=port)
    worker = prem_worker(config, namespace, tmp_path / "worker.log")
    client = PolicyClient(BrokerSettings(host=broker[0], port=broker[1], topic_root=topic_root))
    try:
        worker.start()
        client.wait_online("ha1", timeout_s=20)
        yield Node(namespace, worker, client, config.with_suffix(".state.json"), port)
    finally:
        # No retained document may outlive the test on the shared broker.
        client.client.publish(client.topics.policy("ha1"), b"", qos=1, retain=True)
        worker.stop()
        client.close()


def _install(version: int, *policies: Policy) -> PolicyMessage:
    return message(version, Install(policies=policies))


def _refused(status: PolicyStatus, field: str, text: str) -> None:
    assert status.result == "refused", status
    assert status.refusals[0].field == field, status.refusals
    assert text in status.refusals[0].reason, status.refusals


def test_replays_and_misaddressed_documents_are_refused_and_change_nothing(node: Node) -> None:
    enforced = _install(5, *ENFORCED)
    document = policy_xml.render(enforced)
    assert node.deliver(document).result == "applied"
    kernel, state = node.kernel(), node.state_file.read_bytes()
    assert kernel.by_policy() == expected_entries(ENFORCED)

    other = (udp_to("video", 5001, 1),)
    stale = node.deliver(_install(5, *other))
    _refused(stale, "version", "stale or replayed version 5: version 5 is already enforced")
    assert (stale.version, stale.requested_version) == (5, 5)
    _refused(node.deliver(message(4, Flush())), "version", "stale or replayed version 4")
    assert node.refusals("stale-version", 2) == 2

    # Published on ha1's topic, addressed to the MR's node: refused, and its version (from
    # mr1's sequence) is not reported as one ha1 was asked for.
    misaddressed = node.deliver(message(9, Flush(), node="mr1", direction="uplink"))
    _refused(misaddressed, "node", "message is for node 'mr1', this is 'ha1'")
    assert misaddressed.requested_version is None
    assert node.refusals("wrong-node", 1) == 1
    foreign = message(9, Flush()).model_copy(update={"mobile_router": "mr9"})
    _refused(node.deliver(foreign), "mobile-router", "concerns mobile router 'mr9'")

    assert node.kernel() == kernel
    assert node.state_file.read_bytes() == state
    after = scrape(node.metrics_port)
    assert (after["multinet_prem_enforced_version"], after["multinet_prem_policies"]) == (5, 2)

    # The byte-identical document that set the enforced version is a QoS 1 redelivery (the
    # worker may have died between applying and acknowledging): acknowledged again, no change.
    again = node.deliver(document)
    assert (again.result, again.version, again.inserted, again.replaced) == ("applied", 5, 0, 0)
    assert node.kernel() == kernel
    assert node.state_file.read_bytes() == state


def test_a_retained_document_is_refused_when_published_and_when_replayed(node: Node) -> None:
    # Someone publishes a policy retained (the ACL lets no node do that, but a publisher may
    # misbehave). MQTT 5 clears the retain flag on delivery to existing subscriptions unless
    # they asked for Retain As Published; the worker does, so even this fresh delivery is
    # recognised and refused, as the README says.
    retained = _install(3, *ENFORCED)
    _refused(node.deliver(retained, retain=True), "retain", "retained policy document")
    assert node.kernel().by_policy() == {}
    assert node.refusals("retained", 1) == 1
    # The broker keeps the document and hands it to every new subscription: the worker
    # restarts (its state lost, version 0 enforced), and only the retained flag tells this
    # replay from a new document.
    node.worker.stop()
    node.state_file.unlink(missing_ok=True)
    node.worker.start()
    node.client.wait_online("ha1", timeout_s=20)
    _refused(node.client.next_status("ha1", timeout_s=15), "retain", "retained policy document")
    assert node.kernel().by_policy() == {}
    assert node.refusals("retained", 1) == 1
    assert not node.state_file.exists()
    assert node.deliver(message(1, Flush())).result == "applied", "the next document applies"
