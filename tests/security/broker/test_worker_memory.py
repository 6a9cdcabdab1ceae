"""A PREM worker's peak memory stays under twice its idle memory whatever is published on its
policy topic: the shipped broker refuses anything over the policy limit before reading it, and
the worker announces the same maximum packet size.

A real worker (nftables back end, in a namespace of its own) on a private mosquitto with the
shipped configuration, as broker user `ha1` with its own client id. Its peak resident memory
(VmHWM, /proc) is read after 100 MB and 10 MB publishes and a payload at the limit, against its
resident memory (VmRSS) once started and idle.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.contracts import policy_xml
from services.contracts.limits import MAX_MESSAGE_BYTES
from services.contracts.policy import Install, PolicyMessage
from services.contracts.topics import DEFAULT_ROOT, Topics
from services.prem.client import PolicyClient
from tests.deploy.conftest import SecuredBroker
from tests.faults.procs import Service, bare_node, prem_config, prem_worker
from tests.prem.factories import message, udp_to
from tests.security.broker.test_sizes import MIB, vm_kib

pytestmark = [pytest.mark.kernel, pytest.mark.broker]
log = logging.getLogger(__name__)
T = Topics()


@pytest.fixture
def worker(
    secured_broker: SecuredBroker, make_netns: Callable[[str], str], tmp_path: Path
) -> Iterator[Service]:
    namespace = bare_node(make_netns("mem"))
    config = prem_config(
        tmp_path / "prem.toml",
        DEFAULT_ROOT,  # the shipped ACL's root
        backend="nftables",
        broker_port=secured_broker.running.port,
    )
    password = secured_broker.users.passwords["ha1"]
    with config.open("a", encoding="utf-8") as out:
        out.write(f'username = "ha1"\npassword = "{password}"\n')
    service = prem_worker(config, namespace, tmp_path / "worker.log")
    service.start()
    try:
        yield service
    finally:
        service.stop()


def test_peak_memory_stays_under_twice_idle_whatever_is_published(
    secured_broker: SecuredBroker, worker: Service
) -> None:
    nsa = PolicyClient(secured_broker.settings("nsa"), client_id=secured_broker.client_id("nsa"))
    try:
        nsa.wait_online("ha1", timeout_s=30)
        first = nsa.deliver("ha1", policy_xml.render(_install(1)), timeout_s=15)
        assert first.result == "applied", first
        idle_kib = vm_kib(worker.pid, "VmRSS")

        for megabytes in (100, 10):
            flooder = secured_broker.connect("soap-gateway")
            payload = b"<" + b"x" * (megabytes * MIB)
            info = flooder.client.publish(T.policy("ha1"), payload, qos=1)
            flooder.pump(flooder.disconnected_now, what="disconnection", deadline_s=30)
            assert info.mid not in flooder.pubacks
            del payload
        # The largest payload the broker lets through, not a document: refused by the worker.
        at_limit = nsa.deliver("ha1", b"<" + b"y" * (MAX_MESSAGE_BYTES - 1), timeout_s=15)
        assert at_limit.result == "refused", at_limit
        after = nsa.deliver("ha1", policy_xml.render(_install(2)), timeout_s=15)
        assert after.result == "applied", "the worker goes on"

        peak_kib = vm_kib(worker.pid, "VmHWM")
        log.info("worker idle %d KiB, peak %d KiB", idle_kib, peak_kib)
        assert peak_kib < 2 * idle_kib, f"peak {peak_kib} KiB, idle {idle_kib} KiB"
        assert worker.alive()
    finally:
        nsa.close()


def _install(version: int) -> PolicyMessage:
    return message(version, Install(policies=(udp_to("voice", 5002, 1),)))
