"""A replica that lost its lease but still runs cannot get a document applied: two NSA
replicas lease the partitions on a real etcd and deliver through the real SOAP gateway to two
real PREM workers (memory back end, each in a network namespace of its own).

The replica holding mr1 is SIGSTOPped past its lease while mr1's link degrades: the other
replica takes the partition over, and its documents, under the newer epoch, move video at
both workers. Resumed (SIGCONT), the old holder gives the partition up; whatever it still
sends is refused. A document of its epoch replayed to a worker (a delayed or duplicated
delivery) is refused as fenced, and nothing changes at the worker. Throughout, the epochs of
the documents each worker applied never go down.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from labs.etcd import etcd_binary, running_etcd
from services.contracts import policy_xml
from services.contracts.fencing import epoch_of
from services.contracts.messages import BindingEventKind
from services.contracts.settings import BrokerSettings
from services.nsa.core.ownership import partition_of
from services.nsa.etcd import Etcd
from tests.conftest import _require
from tests.faults.procs import Service
from tests.nsa.busbed import tail, wait_until, write_settings
from tests.nsa.chainbed import HA_NODE, MR, MR_NODE, ROUTERS, Chain, running_chain

pytestmark = [pytest.mark.kernel, pytest.mark.broker]
PARTITIONS = 4
NAMES = ("nsa-a", "nsa-b")


@pytest.fixture
def chain(
    broker: tuple[str, int],
    topic_root: str,
    tmp_path: Path,
    make_netns: Callable[[str], str],
) -> Iterator[Chain]:
    _require(os.geteuid() == 0, "needs root")
    settings = BrokerSettings(host=broker[0], port=broker[1], topic_root=topic_root)
    with running_chain(settings, tmp_path, make_netns) as bed:
        yield bed


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[str]:
    _require(etcd_binary() is not None, "needs etcd (Debian package etcd-server)")
    with running_etcd(tmp_path) as url:
        yield url


def _holder(etcd: str) -> str | None:
    client = Etcd(etcd)
    try:
        key = f"/multinet/nsa/partitions/{partition_of(MR, PARTITIONS)}"
        found = [e.value for e in client.range(key)]
    finally:
        client.close()
    return found[0] if found else None


def _epoch(chain: Chain, node: str) -> int:
    state = chain.held(node)
    return 0 if state is None else epoch_of(state.version)


def test_a_replica_past_its_lease_cannot_get_a_document_applied(
    chain: Chain, etcd: str, tmp_path: Path
) -> None:
    driver = chain.driver
    replicas = {}
    for name in NAMES:
        config = write_settings(
            tmp_path / f"{name}.yaml",
            driver.broker,
            ROUTERS,
            nsa={
                "name": name,
                "gateway": chain.soap_link(),
                "coordination": {
                    "etcd": etcd,
                    "partitions": PARTITIONS,
                    "lease_ttl_s": 1,
                    "warm_s": 1.0,
                },
            },
        )
        argv = [sys.executable, "-m", "services.cli", "nsa", "run", "--config", str(config)]
        replicas[name] = Service(argv, tmp_path / f"{name}.log")
    with ExitStack() as stack:
        for replica in replicas.values():
            replica.start()
            stack.callback(replica.stop)
        driver.metrics(MR_NODE, 1, rtt_ms=20.0)
        driver.metrics(MR_NODE, 2, rtt_ms=60.0)
        for bid in (1, 2):
            driver.binding(MR, bid, BindingEventKind.REGISTERED)
        wait_until(chain.both_on(1), "video on BID 1 at both workers\n" + chain.logs(), 30)
        holder = _holder(etcd)
        assert holder in NAMES
        old = _epoch(chain, HA_NODE)
        assert old > 0, "documents carry the partition's epoch"
        assert _epoch(chain, MR_NODE) == old

        # The holder stops past its lease while BID 1 degrades: the other replica takes over.
        os.kill(replicas[holder].pid, signal.SIGSTOP)
        stack.callback(_resume, replicas[holder].pid)  # before its stop (LIFO)
        driver.metrics(MR_NODE, 1, rtt_ms=250.0)
        wait_until(
            lambda: chain.both_on(2)() and _epoch(chain, HA_NODE) > old,
            "video on BID 2 under the new holder's epoch\n" + chain.logs(),
            20,
        )
        new = _epoch(chain, HA_NODE)
        assert _holder(etcd) not in (None, holder)

        # Resumed, the old holder gives up; whatever it sends under its epoch is refused.
        os.kill(replicas[holder].pid, signal.SIGCONT)
        wait_until(
            lambda: "lost partition" in replicas[holder].text(),
            "the resumed replica giving its partition up\n"
            + tail(*(r.log for r in replicas.values())),
            10,
        )
        time.sleep(1.0)
        assert chain.both_on(2)()
        assert _epoch(chain, HA_NODE) == new
        assert _epoch(chain, MR_NODE) == new

        # A document of the old epoch delivered late: refused as fenced, nothing changes.
        stale = next(
            payload
            for node, payload in reversed(driver.documents)
            if node == HA_NODE and epoch_of(policy_xml.parse(payload).version) == old
        )
        version = policy_xml.parse(stale).version
        before = chain.held(HA_NODE)
        seen = len(driver.statuses)
        driver.publish(driver.topics.policy(HA_NODE), stale)
        wait_until(
            lambda: any(s.requested_version == version for s in driver.statuses[seen:]),
            "the worker's answer to the late document\n" + chain.logs(),
            10,
        )
        answer = next(s for s in driver.statuses[seen:] if s.requested_version == version)
        assert answer.result == "refused"
        assert answer.refusals[0].field == "version.epoch", answer.refusals
        assert chain.held(HA_NODE) == before

    applied: dict[str, list[int]] = {}
    for status in driver.statuses:
        if status.result == "applied":
            applied.setdefault(status.node, []).append(epoch_of(status.version))
    for node, epochs in applied.items():
        assert epochs == sorted(epochs), (node, epochs)
    assert new in applied[HA_NODE]


def _resume(pid: int) -> None:
    """SIGCONT, so that a stopped replica can act on its SIGTERM; gone already is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)
