"""Fixtures of the security battery.

`live_node`: one real PREM worker per test module (nftables back end, a namespace of its own
with a sentinel table and rules, a unique topic root on the real broker), shared by the
module's cases: each case proves the worker answers, changes nothing, lives on, and applies
the next valid document, so a case that broke the worker would fail every later one too.

The deployment's secured broker fixtures are re-exported for the ACL rows.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator

import pytest

from services import netns
from services.contracts.settings import BrokerSettings
from services.ports import free_port
from services.prem.client import PolicyClient
from tests.conftest import _require
from tests.deploy.conftest import (  # noqa: F401 - fixtures, registered by being imported
    broker_users,
    broker_version,
    make_secured_broker,
    secured_broker,
)
from tests.faults.procs import bare_node, prem_config, prem_worker
from tests.security.live import NODE, STATUS_TIMEOUT_S, LetterBox, LiveNode, add_sentinel


@pytest.fixture(scope="module")
def live_node(
    broker: tuple[str, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveNode]:
    """A running worker for ha1 in its own namespace, with a sentinel (see the docstring)."""
    _require(os.geteuid() == 0, "needs root for network namespaces")
    _require(shutil.which("nft") is not None, "needs nft (Debian: nftables)")
    topic_root = f"test-{uuid.uuid4().hex[:10]}/multinet/v1"
    namespace = f"mnt-sec-{uuid.uuid4().hex[:6]}"
    netns.create(namespace)
    workdir = tmp_path_factory.mktemp("live")
    state_dir = workdir / "state"
    state_dir.mkdir()
    port = free_port()
    config = prem_config(state_dir / "prem.toml", topic_root, backend="nftables", metrics_port=port)
    worker = prem_worker(config, namespace, workdir / "worker.log")
    settings = BrokerSettings(host=broker[0], port=broker[1], topic_root=topic_root)
    client = PolicyClient(settings)
    letters = LetterBox(settings)
    try:
        bare_node(namespace)
        add_sentinel(namespace)
        worker.start()
        client.wait_online(NODE, timeout_s=STATUS_TIMEOUT_S)
        yield LiveNode(namespace, worker, client, letters, state_dir, port)
    finally:
        # No retained document may outlive the battery on the shared broker.
        client.client.publish(client.topics.policy(NODE), b"", qos=1, retain=True)
        worker.stop()
        letters.close()
        client.close()
        netns.delete(namespace)
