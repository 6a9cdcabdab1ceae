"""Standalone mode: a PREM daemon serving SOAP itself, no broker.

The call mapping is tested pure; then a real daemon process (`multinet prem run --standalone`)
enforces with nftables in a namespace lab while its SOAP ports listen in the test's own
namespace, and a zeep client and raw UDP datagrams move real traffic.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import zeep
import zeep.helpers

from labs.prem import MNP4, MNP6, Lab, send_udp, worker_argv, write_config
from services import netns
from services.contracts import policy_xml
from services.contracts.policy import Flush, Install, Update
from services.prem.readback import read_table
from services.prem.standalone import check_local_call, standalone_settings
from services.process import stop
from services.soap_gateway.checks import CallRefused, FaultCode
from tests.prem.factories import message, settings, udp_to
from tests.soap_gateway.helpers import downlink, uplink
from tests.soap_gateway.test_udp import by_node, envelope, exchange, fault

PACKETS = 100
CLI = [sys.executable, "-m", "services.cli"]
VIDEO2 = Install(policies=(udp_to("video", 5001, 2),))
VIDEO2_FALLBACK = Install(policies=(udp_to("video", 5001, 2, fallbacks=(1,)),))


@pytest.mark.parametrize(
    ("role", "down", "up", "code", "text"),
    [
        ("ha", downlink(1, VIDEO2), None, None, ""),
        ("ha", downlink(1, VIDEO2), "  ", None, ""),
        ("mr", "", uplink(1, VIDEO2), None, ""),
        ("ha", downlink(1, VIDEO2), uplink(1, VIDEO2), FaultCode.NODE_MISMATCH, "uplink: node"),
        ("mr", downlink(1, VIDEO2), uplink(1, VIDEO2), FaultCode.NODE_MISMATCH, "downlink: node"),
        ("ha", "", uplink(1, VIDEO2), FaultCode.NODE_MISMATCH, "uplink"),
        ("mr", "", None, FaultCode.MISSING_PART, "uplink: the document is missing"),
        ("ha", "<policy", None, FaultCode.INVALID_DOCUMENT, "downlink: line 1"),
        ("ha", downlink(1, Flush()), None, FaultCode.OPERATION_MISMATCH, "<flush>"),
        ("mr", "", downlink(1, VIDEO2), FaultCode.NODE_MISMATCH, "uplink: field node"),
        (
            "ha",
            uplink(1, VIDEO2),
            None,
            FaultCode.NODE_MISMATCH,
            "field node: is 'mr1', expected 'ha1'",
        ),
        (
            "ha",
            policy_xml.render(message(1, VIDEO2).model_copy(update={"symmetric": True})).decode(),
            None,
            FaultCode.SCHEME_CONFLICT,
            "no bus",
        ),
    ],
)
def test_a_call_carries_only_this_nodes_part(
    tmp_path: Path, role: str, down: str, up: str | None, code: FaultCode | None, text: str
) -> None:
    node = "ha1" if role == "ha" else "mr1"
    prem = settings(tmp_path, node=node, role=role)
    if code is None:
        delivery = check_local_call(prem, "install", "mr1", down, up)
        assert (delivery.node, delivery.direction.value, delivery.version) == (
            node,
            "downlink" if role == "ha" else "uplink",
            1,
        )
        return
    with pytest.raises(CallRefused) as info:
        check_local_call(prem, "install", "mr1", down, up)
    assert info.value.code is code
    assert text in str(info.value)


def test_unknown_mobile_router_and_settings(tmp_path: Path) -> None:
    prem = settings(tmp_path)
    with pytest.raises(CallRefused) as info:
        check_local_call(prem, "install", "mr7", downlink(1, VIDEO2), None)
    assert info.value.code is FaultCode.UNKNOWN_MOBILE_ROUTER
    gateway = standalone_settings(prem, "127.0.0.1", 0, udp_port=0)
    assert gateway.router("mr1") is not None
    assert (gateway.name, gateway.max_policies, gateway.udp_port) == ("ha1", 20000, 0)


@dataclass
class Daemon:
    """A standalone daemon process and what it printed."""

    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def wait_for(self, pattern: str, timeout_s: float = 30) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.lines):
                found = re.search(pattern, line)
                if found:
                    return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        pytest.fail(f"never logged {pattern!r}:\n" + "".join(self.lines[-40:]))


@dataclass
class Bed:
    lab: Lab
    daemon: Daemon
    http_port: int
    udp_port: int
    client: Any

    def counts(self, dst: str = MNP6, port: int = 5001) -> tuple[int, int]:
        before = self.lab.tx_packets("b1"), self.lab.tx_packets("b2")
        netns.call_in(self.lab.sender, send_udp, dst, port, PACKETS)
        return self.lab.tx_packets("b1") - before[0], self.lab.tx_packets("b2") - before[1]

    def kernel(self) -> str:
        return netns.run(self.lab.router, ["nft", "list", "ruleset"])

    def status(self) -> dict[str, Any]:
        rows = zeep.helpers.serialize_object(  # type: ignore[no-untyped-call]
            self.client.service.GetStatus(mobile_router="mr1")
        )
        assert [row["node"] for row in rows] == ["ha1"]
        return dict(rows[0])

    def wait(self, check: Callable[[], bool], timeout_s: float = 15) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            if time.monotonic() > deadline:
                pytest.fail("".join(self.daemon.lines[-20:]))
            time.sleep(0.1)

    def install(self, version: int, **parts: str) -> dict[str, dict[str, Any]]:
        rows = zeep.helpers.serialize_object(  # type: ignore[no-untyped-call]
            self.client.service.Install(mobile_router="mr1", **parts)
        )
        return {row["node"]: row for row in rows}


def _on(counts: tuple[int, int], link: str) -> bool:
    b1, b2 = counts
    return (b2 >= PACKETS and b1 <= 1) if link == "b2" else (b1 >= PACKETS and b2 <= 1)


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Bed]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    lab = Lab()
    config = write_config(lab, tmp_path, "nftables", "unused/multinet/v1")
    argv = [
        *worker_argv(config, lab.router),
        "--standalone",
        "--soap-listen",
        "127.0.0.1:0",
        "--soap-udp",
        "0",
    ]
    lab.build()
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    daemon = Daemon(proc)

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            daemon.lines.append(line)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        udp = int(daemon.wait_for(r"SOAP over UDP on 127\.0\.0\.1:(\d+)").group(1))
        http = int(daemon.wait_for(r"serving SOAP on http://127\.0\.0\.1:(\d+)/").group(1))
        client = zeep.Client(f"http://127.0.0.1:{http}/?wsdl")  # type: ignore[no-untyped-call]
        yield Bed(lab, daemon, http, udp, client)
    finally:
        if proc.poll() is None:
            stop(proc, 15)
        reader.join(5)
        lab.destroy()


@pytest.mark.kernel
def test_standalone_daemon_applies_soap_calls_in_its_kernel(bed: Bed) -> None:
    assert _on(bed.counts(), "b1"), "no policy: the default path"
    status = by_node(
        exchange(bed.udp_port, envelope("GetStatus", mobile_router="mr1")), "NodeStatus"
    )
    assert {n: (s["online"], s["version"]) for n, s in status.items()} == {"ha1": ("true", "0")}

    rows = bed.install(1, downlink=downlink(1, VIDEO2_FALLBACK))
    assert {n: (r["outcome"], r["version"], r["direction"]) for n, r in rows.items()} == {
        "ha1": ("applied", 1, "downlink")
    }, "".join(bed.daemon.lines[-20:])
    assert _on(bed.counts(), "b2")
    assert _on(bed.counts(MNP4), "b2")

    # A link event is enforced by the same main loop and shows in GetStatus.
    netns.run(bed.lab.receiver, ["ip", "link", "set", "d2", "down"])
    bed.wait(lambda: bed.status()["last_result"] == "fallback")
    assert _on(bed.counts(), "b1")
    netns.run(bed.lab.receiver, ["ip", "link", "set", "d2", "up"])
    bed.wait(lambda: _on(bed.counts(), "b2"))

    # Bad calls: a Fault each, nothing changes in the kernel.
    kernel = bed.kernel()
    bad: list[tuple[dict[str, str], str]] = [
        ({"downlink": "<policy"}, "Client.InvalidDocument"),
        ({"downlink": downlink(2, VIDEO2), "uplink": uplink(2, VIDEO2)}, "Client.NodeMismatch"),
        ({"downlink": uplink(2, VIDEO2)}, "Client.NodeMismatch"),
        ({"downlink": downlink(2, Flush())}, "Client.OperationMismatch"),
    ]
    for parts, code in bad:
        with pytest.raises(zeep.exceptions.Fault) as info:
            bed.install(2, **parts)
        assert info.value.code.endswith(code), (code, info.value.message)
    assert bed.kernel() == kernel
    assert _on(bed.counts(), "b2")

    # The enforcer's own refusal (a stale version) comes back as a refused row with reasons.
    stale = bed.install(1, downlink=downlink(1, Install(policies=(udp_to("video", 5001, 1),))))
    assert (stale["ha1"]["outcome"], stale["ha1"]["version"]) == ("refused", 1)
    assert "stale" in stale["ha1"]["reasons"]["Reason"][0]["reason"]
    assert bed.kernel() == kernel

    # SOAP over UDP: one datagram moves the flow back to BID 1.
    update = Update(replace=(udp_to("video", 5001, 1),))
    answer = exchange(
        bed.udp_port, envelope("Update", mobile_router="mr1", downlink=downlink(2, update))
    )
    results = by_node(answer, "NodeResult")
    assert {n: (r["outcome"], r["version"]) for n, r in results.items()} == {
        "ha1": ("applied", "2")
    }
    assert _on(bed.counts(), "b1")
    code, _ = fault(exchange(bed.udp_port, b"<soap:Envelope"))
    assert code == "Client.XMLSyntaxError"

    status = by_node(
        exchange(bed.udp_port, envelope("GetStatus", mobile_router="mr1")), "NodeStatus"
    )
    assert (status["ha1"]["version"], status["ha1"]["last_result"]) == ("2", "applied")

    # Concurrent calls (HTTP pool and UDP pool) all reach the one enforcing thread.
    def call(version: int) -> str:
        moved = Update(replace=(udp_to("video", 5001, 2 if version % 2 else 1),))
        request = envelope("Update", mobile_router="mr1", downlink=downlink(version, moved))
        row = by_node(exchange(bed.udp_port, request), "NodeResult")["ha1"]
        return str(row["outcome"])

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(call, range(3, 11)))
    assert set(outcomes) <= {"applied", "refused"}
    assert outcomes[-1] == "applied", "the highest version is never stale"
    assert bed.status()["version"] == 10
    assert _on(bed.counts(), "b1")

    bed.daemon.proc.terminate()
    assert bed.daemon.proc.wait(15) == 0


@pytest.mark.kernel
def test_a_document_whose_handling_raises_is_refused_and_the_daemon_lives_on(
    bed: Bed, tmp_path: Path
) -> None:
    assert bed.install(1, downlink=downlink(1, VIDEO2))["ha1"]["outcome"] == "applied"
    enforced = read_table(bed.lab.router).by_policy()
    state = tmp_path / "state.json"
    saved = state.read_bytes()
    # Storing the state fails after the kernel batch committed (a directory where the state
    # file goes): not a refusal the daemon foresaw, so the kernel is put back and the
    # document refused; the caller hears nothing before the deadline.
    state.unlink()
    state.mkdir()
    try:
        moved = Install(policies=(udp_to("video", 5001, 1),))
        assert bed.install(2, downlink=downlink(2, moved))["ha1"]["outcome"] == "not-reached"
    finally:
        state.rmdir()
        state.write_bytes(saved)
    assert bed.daemon.proc.poll() is None, "".join(bed.daemon.lines[-20:])
    assert read_table(bed.lab.router).by_policy() == enforced, "the committed batch was undone"
    assert _on(bed.counts(), "b2")
    status = bed.status()
    assert (status["version"], status["last_result"]) == (1, "refused")
    assert "not handled: IsADirectoryError" in status["reasons"]["Reason"][0]["reason"]
    assert any("could not be handled" in line for line in bed.daemon.lines)
    moved = Install(policies=(udp_to("video", 5001, 1),))
    assert bed.install(2, downlink=downlink(2, moved))["ha1"]["outcome"] == "applied"
    assert _on(bed.counts(), "b1")


@pytest.mark.parametrize(
    ("extra", "text"),
    [
        (["--soap-listen", "127.0.0.1:8081"], "need --standalone"),
        (["--standalone", "--soap-listen", "8081"], "expected HOST:PORT"),
        (["--standalone", "--soap-udp", "70000"], "udp_port"),
    ],
)
def test_standalone_options_are_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], text: str
) -> None:
    from services.cli import main

    config = tmp_path / "prem.toml"
    config.write_text(
        '[prem]\nnode = "ha1"\nrole = "ha"\nmobile_router = "mr1"\nbackend = "memory"\n'
        f'state_file = "{tmp_path / "state.json"}"\nbids = [{{ bid = 1 }}]\n'
    )
    assert main(["prem", "run", "--config", str(config), *extra]) == 2
    assert text in capsys.readouterr().err


def test_a_busy_port_is_reported_before_anything_is_enforced(tmp_path: Path) -> None:
    config = tmp_path / "prem.toml"
    config.write_text(
        '[prem]\nnode = "ha1"\nrole = "ha"\nmobile_router = "mr1"\nbackend = "memory"\n'
        f'state_file = "{tmp_path / "state.json"}"\nbids = [{{ bid = 1 }}]\n'
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        listen = f"127.0.0.1:{busy.getsockname()[1]}"
        proc = subprocess.run(
            [*CLI, "prem", "run", "--config", str(config), "--standalone", "--soap-listen", listen],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert proc.returncode == 1, proc.stderr
    assert f"cannot listen on {listen}" in proc.stderr
    assert not (tmp_path / "state.json").exists()
