"""A legacy NSA built with gSOAP (the toolkit of the paper) at its default options drives the
gateway and a standalone worker: Install, Update, GetStatus and Flush, enforced in the kernel.

The client's stubs are generated from the WSDL the service serves (fetched with the caller's
credentials, as deploy/README.md tells a legacy NSA to), by `wsdl2h` and `soapcpp2` with no
options, into a temporary directory; the program itself is tests/security/soap/gsoap_client.cpp.
The workers enforce with nftables in namespaces of their own; what they enforce is read back
from the kernel (`nft -j`), not from them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.contracts.policy import Flush, Install, Operation, Update
from services.contracts.settings import BrokerSettings
from services.prem.client import PolicyClient
from services.prem.readback import read_table
from tests.conftest import _require
from tests.faults.procs import (
    Service,
    bare_node,
    gateway_port,
    prem_config,
    prem_worker,
)
from tests.prem.factories import udp_to
from tests.security.soap import gsoap
from tests.security.soap.conftest import (
    PASSWORD,
    add_standalone_callers,
    caller_table,
    gateway_config,
)
from tests.soap_gateway.helpers import downlink, uplink

pytestmark = [pytest.mark.kernel, pytest.mark.broker]

VOICE = udp_to("voice", 5002, 1)
VIDEO = udp_to("video", 5001, 2)


@pytest.fixture(autouse=True)
def _gsoap_tools() -> None:
    missing = gsoap.tools_missing()
    _require(missing is None, str(missing))


def _documents(directory: Path, version: int, op: Operation, *, mr: bool = True) -> list[Path]:
    down = directory / f"down-{version}.xml"
    down.write_text(downlink(version, op), encoding="utf-8")
    if not mr:
        return [down]
    up = directory / f"up-{version}.xml"
    up.write_text(uplink(version, op), encoding="utf-8")
    return [down, up]


def _policies(namespace: str) -> set[str]:
    return set(read_table(namespace).by_policy())


@pytest.fixture
def services(tmp_path: Path) -> Iterator[list[Service]]:
    """Processes started by a test, stopped at teardown."""
    started: list[Service] = []
    yield started
    for service in started:
        service.stop()


def test_gsoap_client_with_default_options_drives_the_gateway_and_its_workers(
    make_netns: Callable[[str], str],
    broker: tuple[str, int],
    topic_root: str,
    tmp_path: Path,
    services: list[Service],
) -> None:
    ha, mr = bare_node(make_netns("ha")), bare_node(make_netns("mr"))
    for node, role, namespace in (("ha1", "ha", ha), ("mr1", "mr", mr)):
        config = prem_config(
            tmp_path / f"{node}.toml", topic_root, backend="nftables", node=node, role=role
        )
        services.append(prem_worker(config, namespace, tmp_path / f"{node}.log"))
    gateway_file = gateway_config(tmp_path / "gateway.toml", topic_root, caller_table())
    argv = [sys.executable, "-m", "services.cli", "soap-gateway", "--config", str(gateway_file)]
    gateway = Service([*argv, "--log-json"], tmp_path / "gateway.log")
    services.append(gateway)
    for service in services:
        service.start()
    watcher = PolicyClient(BrokerSettings(host=broker[0], port=broker[1], topic_root=topic_root))
    try:
        watcher.wait_online("ha1", timeout_s=30)
        watcher.wait_online("mr1", timeout_s=30)
    finally:
        watcher.close()
    url = f"http://127.0.0.1:{gateway_port(gateway)}/"
    client = gsoap.build(gsoap.fetch_wsdl(url, "nsa", PASSWORD))
    assert '#import "soap12.h"' not in client.header, "wsdl2h read the WSDL as SOAP 1.1"

    def call(operation: str, *documents: Path) -> list[str]:
        answer = gsoap.call(client, url, "nsa", PASSWORD, operation, "mr1", *documents)
        assert answer.code == 0, f"{operation}: {answer.text}\n{gateway.text()[-2000:]}"
        return answer.lines

    install = Install(policies=(VOICE,))
    assert call("Install", *_documents(tmp_path, 1, install)) == [
        "ha1 downlink applied 1",
        "mr1 uplink applied 1",
    ]
    assert _policies(ha) == _policies(mr) == {"voice"}
    update = Update(insert=(VIDEO,))
    assert call("Update", *_documents(tmp_path, 2, update)) == [
        "ha1 downlink applied 2",
        "mr1 uplink applied 2",
    ]
    assert _policies(ha) == _policies(mr) == {"voice", "video"}
    assert call("GetStatus") == ["ha1 downlink online 2 applied", "mr1 uplink online 2 applied"]
    assert call("Flush", *_documents(tmp_path, 3, Flush())) == [
        "ha1 downlink applied 3",
        "mr1 uplink applied 3",
    ]
    assert _policies(ha) == _policies(mr) == set()

    anonymous = gsoap.call(client, url, None, None, "GetStatus", "mr1")
    assert anonymous.code == 2
    assert "Client.Unauthenticated" in anonymous.text
    assert "from 127.0.0.1 (no caller): Client.Unauthenticated: no credentials" in gateway.text()


def test_gsoap_client_with_default_options_drives_a_standalone_worker(
    make_netns: Callable[[str], str], tmp_path: Path, services: list[Service]
) -> None:
    ha = bare_node(make_netns("ha"))
    config = prem_config(tmp_path / "ha.toml", "unused/v1", backend="nftables")
    add_standalone_callers(config, caller_table())
    daemon = prem_worker(config, ha, tmp_path / "ha.log")
    daemon = Service(
        [*daemon.argv, "--standalone", "--soap-listen", "127.0.0.1:0"], tmp_path / "ha.log"
    )
    services.append(daemon)
    daemon.start()
    url = f"http://127.0.0.1:{gateway_port(daemon)}/"
    client = gsoap.build(gsoap.fetch_wsdl(url, "nsa", PASSWORD))

    def call(operation: str, *documents: Path) -> list[str]:
        answer = gsoap.call(client, url, "nsa", PASSWORD, operation, "mr1", *documents)
        assert answer.code == 0, f"{operation}: {answer.text}\n{daemon.text()[-2000:]}"
        return answer.lines

    assert call("Install", *_documents(tmp_path, 1, Install(policies=(VOICE,)), mr=False)) == [
        "ha1 downlink applied 1"
    ]
    assert _policies(ha) == {"voice"}
    update = Update(insert=(VIDEO,))
    assert call("Update", *_documents(tmp_path, 2, update, mr=False)) == ["ha1 downlink applied 2"]
    assert _policies(ha) == {"voice", "video"}
    assert call("GetStatus") == ["ha1 downlink online 2 applied"]
    assert call("Flush", *_documents(tmp_path, 3, Flush(), mr=False)) == ["ha1 downlink applied 3"]
    assert _policies(ha) == set()
    refused = gsoap.call(client, url, "nsa", "wrong", "GetStatus", "mr1")
    assert refused.code == 2
    assert "Client.Unauthenticated" in refused.text
