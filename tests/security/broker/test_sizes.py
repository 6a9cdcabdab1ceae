"""Sizes are enforced before memory is spent: the shipped broker refuses a message over the
policy document limit (services/contracts/limits.py) from its fixed header, and a client gets
nothing larger than the maximum packet size it announced.

Real clients on a private mosquitto with the shipped configuration: the services' own MQTT 5
client, and mosquitto_pub speaking MQTT 3.1.1 (which is told no limit, so only the broker can
stop it).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from services.contracts.limits import MAX_MESSAGE_BYTES, MAX_PACKET_BYTES
from services.contracts.topics import Topics
from tests.conftest import _require
from tests.deploy.brokerproc import SHIPPED_CONF
from tests.deploy.conftest import SecuredBroker
from tests.deploy.probe import Probe, Received

pytestmark = pytest.mark.broker

T = Topics()
PACKET_TOO_LARGE = 0x95
MIB = 1024 * 1024


def vm_kib(pid: int, field: str) -> int:
    """`VmRSS`, `VmHWM` ... of a process, in KiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def test_the_shipped_limits_are_the_contracts() -> None:
    directives = dict(
        line.split(" ", 1)
        for line in SHIPPED_CONF.read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    )
    assert int(directives["message_size_limit"]) == MAX_MESSAGE_BYTES
    assert int(directives["max_packet_size"]) == MAX_PACKET_BYTES


def _policy_reader(secured_broker: SecuredBroker) -> Probe:
    worker = secured_broker.connect("ha1")
    worker.subscribe(T.policy("ha1"))
    return worker


def test_a_document_at_the_limit_is_delivered_and_one_byte_more_is_refused(
    secured_broker: SecuredBroker,
) -> None:
    worker = _policy_reader(secured_broker)
    gateway = secured_broker.connect("soap-gateway")
    info = gateway.client.publish(T.policy("ha1"), b"o" * (MAX_MESSAGE_BYTES + 1), qos=1)
    gateway.pump(lambda: info.mid in gateway.pubacks or gateway.disconnected_now(), what="answer")
    # mosquitto 2.0.11 answers PUBACK 0x95, a code MQTT 5 does not allow in a PUBACK: paho
    # takes it for a protocol error and drops the connection. Either way: not accepted.
    if info.mid in gateway.pubacks:
        assert gateway.pubacks[info.mid].value == PACKET_TOO_LARGE
    at_limit = b"<" + b"a" * (MAX_MESSAGE_BYTES - 1)
    nsa = secured_broker.connect("nsa")
    assert not nsa.publish(T.policy("ha1"), at_limit).is_failure
    received = worker.wait_for(b"<aaaa")
    assert [len(m.payload) for m in received] == [MAX_MESSAGE_BYTES], "only the one at the limit"


@pytest.mark.parametrize("megabytes", [10, 100])
def test_an_oversized_packet_disconnects_its_sender_before_the_broker_reads_it(
    secured_broker: SecuredBroker, megabytes: int
) -> None:
    worker = _policy_reader(secured_broker)
    broker_pid = secured_broker.running.process.pid
    before = vm_kib(broker_pid, "VmHWM")
    gateway = secured_broker.connect("soap-gateway")  # may publish policies
    info = gateway.client.publish(T.policy("ha1"), b"x" * (megabytes * MIB), qos=1)
    gateway.pump(lambda: info.mid in gateway.pubacks or gateway.disconnected_now(), what="refusal")
    assert info.mid not in gateway.pubacks, "the broker never acknowledges it"
    # The broker read the fixed header, not the body: its peak memory did not grow by it.
    grown_kib = vm_kib(broker_pid, "VmHWM") - before
    assert grown_kib < 4 * 1024, f"the broker's peak memory grew by {grown_kib} KiB"
    assert not secured_broker.connect("nsa").publish(T.policy("ha1"), b"barrier").is_failure
    assert worker.wait_for(b"barrier") == [Received(T.policy("ha1"), b"barrier")]


def test_an_mqtt311_publisher_is_stopped_by_the_broker_alone(
    secured_broker: SecuredBroker, tmp_path: Path
) -> None:
    _require(shutil.which("mosquitto_pub") is not None, "needs mosquitto_pub")
    worker = _policy_reader(secured_broker)
    payload = tmp_path / "big"
    payload.write_bytes(b"y" * (10 * MIB))
    done = subprocess.run(
        [
            "mosquitto_pub",
            "-h",
            "127.0.0.1",
            "-p",
            str(secured_broker.running.port),
            "-V",
            "mqttv311",
            "-u",
            "nsa",
            "-P",
            secured_broker.users.passwords["nsa"],
            "-i",
            secured_broker.client_id("nsa"),
            "-q",
            "1",
            "-t",
            T.policy("ha1"),
            "-f",
            str(payload),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode != 0, done
    assert not secured_broker.connect("soap-gateway").publish(T.policy("ha1"), b"b2").is_failure
    assert worker.wait_for(b"b2") == [Received(T.policy("ha1"), b"b2")]


def test_a_client_gets_nothing_larger_than_the_maximum_packet_size_it_announced(
    secured_broker: SecuredBroker,
) -> None:
    small = secured_broker.settings("ha1").model_copy(update={"max_packet_bytes": 64 * 1024})
    worker = Probe(small, client_id=secured_broker.client_id("ha1"))
    secured_broker.probes.append(worker)
    assert not worker.connect().is_failure
    worker.subscribe(T.policy("ha1"))
    nsa = secured_broker.connect("nsa")
    assert not nsa.publish(T.policy("ha1"), b"z" * (100 * 1024)).is_failure
    assert not nsa.publish(T.policy("ha1"), b"fits").is_failure
    assert worker.wait_for(b"fits") == [Received(T.policy("ha1"), b"fits")]
