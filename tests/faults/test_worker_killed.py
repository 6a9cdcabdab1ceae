"""A PREM worker SIGKILLed while it applies a large document: after its restart the kernel holds
exactly the desired state.

Real worker process, nftables in a namespace of its own, real broker. Each round publishes an
Install of a few thousand policies (a different BID per policy each round) and kills the worker
some way into handling it: a fraction of one apply's time after publishing, or the moment
`nft monitor` reports its kernel transaction (committed, while the new state is not yet
durable: the window where kernel and stored state disagree). The restarted worker
reconciles the kernel to its stored state, then the broker redelivers the unacknowledged
document (QoS 1, persistent session), so the end state is always the new document. The kernel
is read with `nft -j` in the namespace, not through the worker.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.contracts import policy_xml
from services.contracts.policy import Install, Policy
from services.contracts.settings import BrokerSettings
from services.ports import free_port
from services.prem.client import PolicyClient
from services.prem.readback import Entry, expected_entries, read_table
from tests.faults.commits import Commits
from tests.faults.procs import Service, bare_node, prem_config, prem_worker
from tests.observability.scrape import scrape, wait_scrape
from tests.prem.factories import message, udp_to

pytestmark = [pytest.mark.kernel, pytest.mark.broker]
POLICIES = 3000
#: The worker's nftables table, as `nft monitor` names it.
TABLE = "multinet_prem"
#: When each round kills: a fraction of one apply's time after publishing, or SAVING (the
#: moment the kernel transaction is committed, before the state file is saved).
SAVING = "saving"
KILL_AT: tuple[float | str, ...] = (0.1, 0.4, SAVING, 0.7, SAVING, 1.5)
#: A SAVING kill can come too late (the test process was descheduled while the worker wrote
#: and renamed its file): up to this many more SAVING rounds until one lands in the window.
EXTRA_SAVING_ROUNDS = 4
BEFORE, BETWEEN, AFTER = (
    "before the kernel commit",
    "between the kernel commit and the state file",
    "after the state was saved",
)


def _policies(version: int) -> tuple[Policy, ...]:
    return tuple(
        udp_to(f"p{i}", 10000 + i, 1 + (i + version) % 2, fallbacks=(2 - (i + version) % 2,))
        for i in range(POLICIES)
    )


@dataclass
class Node:
    namespace: str
    worker: Service
    client: PolicyClient
    metrics_port: int
    state_file: Path

    def kernel(self) -> dict[str, tuple[Entry, ...]]:
        return read_table(self.namespace).by_policy()

    def temporary_files(self) -> list[Path]:
        """store.save's temporary files: created once the kernel batch committed, renamed over
        the state file once written and synced."""
        return list(self.state_file.parent.glob(f".{self.state_file.name}.*"))

    def publish_and_kill_after_commit(self, version: int, timeout_s: float = 60.0) -> None:
        """Publish `version` and SIGKILL the worker the moment its kernel transaction is
        reported by `nft monitor` (armed before the publish), before it has serialised and
        saved its state. A kill can still land late (this process descheduled for longer than
        the serialisation); the extra rounds make up for it."""
        with Commits(self.namespace) as commits:
            self.publish(version)
            committed = commits.wait(TABLE, timeout_s)
            self.worker.kill()
        assert committed, "the worker never committed the document"

    def stored_version(self) -> int:
        if not self.state_file.exists():
            return 0
        return int(json.loads(self.state_file.read_text())["version"])

    def publish(self, version: int) -> None:
        document = policy_xml.render(message(version, Install(policies=_policies(version))))
        self.client.watch("ha1")
        info = self.client.client.publish(self.client.topics.policy("ha1"), document, qos=1)
        info.wait_for_publish(10)


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
        yield Node(namespace, worker, client, port, config.with_suffix(".state.json"))
    finally:
        worker.stop()
        client.close()


def _phase(node: Node, version: int, previous: dict[str, tuple[Entry, ...]]) -> str:
    """Where the kill landed, judged from the kernel and the state file it left."""
    kernel = node.kernel()
    new_kernel = kernel == expected_entries(_policies(version))
    saved = node.stored_version() == version
    if saved:
        return AFTER
    if new_kernel:
        return BETWEEN
    assert kernel == previous, "a kernel transaction must be all or nothing"
    return BEFORE


def test_the_kernel_equals_the_desired_state_after_a_kill_mid_apply(node: Node) -> None:
    for version in (1, 2):  # the second replaces every policy, as the rounds below do
        started = time.monotonic()
        node.publish(version)
        status = node.client.next_status("ha1", timeout_s=60)
        assert status.result == "applied", node.worker.text()[-3000:]
        apply_s = time.monotonic() - started
    print(f"\none Install replacing {POLICIES} policies: {apply_s * 1000:.0f} ms end to end")
    previous = node.kernel()
    assert previous == expected_entries(_policies(2))

    phases: list[str] = []
    version = 2
    rounds = iter((*KILL_AT, *[SAVING] * EXTRA_SAVING_ROUNDS))
    for when in rounds:
        if when == SAVING and BETWEEN in phases and len(phases) >= len(KILL_AT):
            break  # the extra rounds only make up for kills that came too late
        version += 1
        if when == SAVING:
            node.publish_and_kill_after_commit(version)
        else:
            node.publish(version)
            time.sleep(apply_s * float(when))  # the point of the round: kill at this moment
            node.worker.kill()
        phases.append(_phase(node, version, previous))

        node.worker.start()
        wanted = expected_entries(_policies(version))
        wait_scrape(
            node.metrics_port,
            lambda s, v=version: s.get("multinet_prem_enforced_version") == v,  # type: ignore[misc]
            timeout_s=60,
        )
        assert node.kernel() == wanted, f"round {version}: kernel differs from the desired state"
        assert node.stored_version() == version
        assert not node.temporary_files(), "the restart removes what a killed save left"
        assert scrape(node.metrics_port)["multinet_prem_rules_owned"] == 2 * POLICIES
        previous = wanted
    landed = "; ".join(f"v{v}: {p}" for v, p in enumerate(phases, start=3))
    print(f"kills landed: {landed}")
    assert BEFORE in phases, landed
    assert BETWEEN in phases, f"no kill landed where kernel and state disagree: {landed}"
