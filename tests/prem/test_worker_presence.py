"""A worker's retained presence under a burst of documents: fewer presences than documents,
and the last one carries the last version (what a gateway or NSA starting later reads).

A real worker (memory back end, in a namespace of its own) on the session's broker; the
documents are delivered one after the other as fast as the worker answers them.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from services.contracts import policy_xml
from services.contracts.messages import Presence
from services.contracts.policy import Install
from services.contracts.settings import BrokerSettings
from services.prem.client import PolicyClient
from services.prem.worker import PRESENCE_INTERVAL_S
from tests.faults.procs import bare_node, prem_config, prem_worker
from tests.prem.factories import message, udp_to

pytestmark = [pytest.mark.kernel, pytest.mark.broker]
DOCUMENTS = 10


def _presences(client: PolicyClient, seconds: float) -> list[Presence]:
    seen = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            seen.append(client.presences.get(timeout=left))
        except queue.Empty:
            break
    return seen


def test_a_burst_of_documents_ends_in_a_presence_with_the_last_version(
    broker: tuple[str, int],
    make_netns: Callable[[str], str],
    topic_root: str,
    tmp_path: Path,
) -> None:
    namespace = bare_node(make_netns("presence"))
    config = prem_config(
        tmp_path / "prem.toml", topic_root, backend="memory", broker_port=broker[1]
    )
    worker = prem_worker(config, namespace, tmp_path / "worker.log")
    worker.start()
    client = PolicyClient(BrokerSettings(host=broker[0], port=broker[1], topic_root=topic_root))
    try:
        assert client.wait_online("ha1", timeout_s=30).version == 0
        started = time.monotonic()
        for version in range(1, DOCUMENTS + 1):
            document = message(version, Install(policies=(udp_to("video", 5000 + version, 1),)))
            status = client.deliver("ha1", policy_xml.render(document), timeout_s=15)
            assert (status.result, status.version) == ("applied", version), status
        burst_s = time.monotonic() - started
        seen = [p for p in _presences(client, 3 * PRESENCE_INTERVAL_S) if p.node == "ha1"]

        assert seen, "no presence after the burst"
        assert seen[-1].online
        assert seen[-1].version == DOCUMENTS, [p.version for p in seen]
        # One at once, then at most one per interval while the burst lasts, and the last.
        most = 2 + int(burst_s / PRESENCE_INTERVAL_S)
        assert len(seen) <= min(most, DOCUMENTS - 1), (burst_s, [p.version for p in seen])
        # A reader that subscribes now gets the last version retained.
        assert client.wait_online("ha1", timeout_s=10).version == DOCUMENTS
        assert worker.alive()
    finally:
        client.close()
        worker.stop()
