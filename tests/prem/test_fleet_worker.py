"""`multinet prem run` with `serves`: one HA worker process for several mobile routers,
through the real broker, on the real kernel (nftables in a namespace).

Each served router is addressed as a node of its own (PolicyClient, as the gateway does): its
documents are answered by its own statuses with its own versions, its retained presence comes
online, and the kernel holds every router's policies under `<node>:<policy id>`. A stopped and
restarted worker keeps every router's state (its SQLite store) and the table.
"""

from __future__ import annotations

import signal
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.contracts import policy_xml
from services.contracts.policy import Flush, Install, Operation, PolicyMessage
from services.contracts.settings import BrokerSettings
from services.prem.client import PolicyClient
from services.prem.readback import Entry, read_table
from tests.faults.procs import Service, bare_node, prem_config, prem_worker
from tests.prem.factories import udp_to

pytestmark = [pytest.mark.kernel, pytest.mark.broker]

SERVED = {"ha1-mr1": "mr1", "ha1-mr2": "mr2"}


def document(node: str, version: int, operation: Operation) -> bytes:
    return policy_xml.render(
        PolicyMessage(
            node=node,
            mobile_router=SERVED[node],
            direction="downlink",
            version=version,
            operation=operation,
        )
    )


@dataclass
class Bed:
    namespace: str
    worker: Service
    client: PolicyClient

    def entries(self) -> dict[str, tuple[Entry, ...]]:
        return read_table(self.namespace).by_policy()


@pytest.fixture
def bed(
    make_netns: Callable[[str], str],
    broker: tuple[str, int],
    topic_root: str,
    tmp_path: Path,
) -> Iterator[Bed]:
    ns = bare_node(make_netns("fleet"))
    served = tmp_path / "served"
    served.write_text(
        "# node  mobile router  prefix\nha1-mr1 mr1 2001:db8:1::/48\nha1-mr2 mr2 2001:db8:2::/48\n",
        encoding="utf-8",
    )
    config = prem_config(
        tmp_path / "ha.toml",
        topic_root,
        backend="nftables",
        broker_port=broker[1],
        extra=f'serves = "{served}"\nfleet_store = "{tmp_path / "fleet.db"}"\n',
    )
    worker = prem_worker(config, ns, tmp_path / "worker.log")
    client = PolicyClient(BrokerSettings(host=broker[0], port=broker[1], topic_root=topic_root))
    try:
        worker.start()
        for node in SERVED:
            client.wait_online(node, timeout_s=20)
        yield Bed(ns, worker, client)
    finally:
        worker.stop()
        client.close()


def test_one_worker_answers_each_router_as_a_node_of_its_own(bed: Bed) -> None:
    voice = Install(policies=(udp_to("voice", 5004, 1), udp_to("web", 443, 2)))
    first = bed.client.deliver("ha1-mr1", document("ha1-mr1", 1, voice))
    assert (first.result, first.node, first.mobile_router, first.version) == (
        "applied",
        "ha1-mr1",
        "mr1",
        1,
    ), bed.worker.text()[-2000:]
    other = Install(policies=(udp_to("voice", 5004, 2),))
    second = bed.client.deliver("ha1-mr2", document("ha1-mr2", 7, other))
    assert (second.result, second.node, second.version) == ("applied", "ha1-mr2", 7)
    assert set(bed.entries()) == {"ha1-mr1:voice", "ha1-mr1:web", "ha1-mr2:voice"}

    # Versions are each router's: mr1's stale 1 is refused, mr2's 7 did not make it stale.
    assert bed.client.deliver("ha1-mr1", document("ha1-mr1", 1, Flush())).result == "refused"
    outside = Install(policies=(udp_to("x", 1, 1, dst="2001:db8:2::/64"),))
    refused = bed.client.deliver("ha1-mr1", document("ha1-mr1", 2, outside))
    assert refused.result == "refused"
    assert [r.field for r in refused.refusals] == ["selector.dst-addr"]
    assert set(bed.entries()) == {"ha1-mr1:voice", "ha1-mr1:web", "ha1-mr2:voice"}
    presence = bed.client.wait_online("ha1-mr2")
    assert presence.version == 7


def test_a_restarted_worker_keeps_every_router(bed: Bed) -> None:
    install = Install(policies=(udp_to("voice", 5004, 1),))
    for node in SERVED:
        assert bed.client.deliver(node, document(node, 3, install)).result == "applied"
    before = bed.entries()
    assert bed.worker.proc is not None
    bed.worker.proc.send_signal(signal.SIGTERM)
    assert bed.worker.proc.wait(timeout=20) == 0
    assert bed.entries() == before  # the kernel keeps enforcing while the worker is away
    bed.worker.start()
    for node in SERVED:
        assert bed.client.wait_online(node, timeout_s=20).version == 3
    status = bed.client.deliver("ha1-mr2", document("ha1-mr2", 4, Flush()))
    assert (status.result, status.version) == ("applied", 4)
    assert set(bed.entries()) == {"ha1-mr1:voice"}


def test_a_document_whose_row_cannot_be_written_is_set_aside_and_undone(
    bed: Bed, tmp_path: Path
) -> None:
    install = Install(policies=(udp_to("voice", 5004, 1),))
    assert bed.client.deliver("ha1-mr1", document("ha1-mr1", 1, install)).result == "applied"
    before = bed.entries()
    # Another process holds the database's write lock: the worker's write of the router's row
    # fails after SQLite's busy wait, once the kernel has taken the change.
    holder = sqlite3.connect(tmp_path / "fleet.db", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        moved = Install(policies=(udp_to("voice", 5004, 2),))
        status = bed.client.deliver("ha1-mr1", document("ha1-mr1", 2, moved), timeout_s=30)
    finally:
        holder.close()
    assert status.result == "refused", status
    assert status.version == 1
    assert status.refusals[0].reason.startswith("not handled: OperationalError"), status
    assert bed.entries() == before, "the router's rules were put back"
    assert "dead letter" in bed.worker.text()
    # The document was acknowledged and set aside: the next one is answered normally.
    assert bed.client.deliver("ha1-mr1", document("ha1-mr1", 3, moved)).result == "applied"
