"""The gateway in-process, two real PREM workers as processes, real SOAP clients.

The HA worker enforces with nftables in a namespace lab (its BID links' packet counters show
where a flow goes); the MR worker uses the memory back end in a bare namespace of its own, so
neither touches the host's rules. Calls come from a zeep client built from our WSDL and from
hand-written envelopes posted with urllib, as a legacy NSA would send them.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import paho.mqtt.client as mqtt
import pytest
import zeep
import zeep.helpers
from lxml import etree

from labs.prem import MNP4, MNP6, Lab, send_udp, worker_argv, write_config
from services import bus, netns
from services.contracts import policy_xml
from services.contracts.policy import Flush, Install, Operation, Update
from services.contracts.settings import BrokerSettings
from services.soap_gateway.server import GatewayServer
from tests.prem.factories import message, udp_to
from tests.soap_gateway.helpers import downlink, gateway_settings, uplink

pytestmark = [pytest.mark.kernel, pytest.mark.broker]
PACKETS = 100
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
GW = "urn:multinet:soap-gateway:1"
VIDEO2 = Install(policies=(udp_to("video", 5001, 2),))


def _mr_config(workdir: Path, topic_root: str) -> Path:
    config = workdir / "prem-mr.toml"
    config.write_text(
        "[prem]\n"
        'node = "mr1"\nrole = "mr"\nmobile_router = "mr1"\nbackend = "memory"\n'
        f'table_base = 3000\nstate_file = "{workdir / "mr-state.json"}"\n'
        "bids = [{ bid = 1 }, { bid = 2 }]\n"
        f'[broker]\ntopic_root = "{topic_root}"\nsession_expiry_s = 600\n',
        encoding="utf-8",
    )
    return config


@dataclass
class Bed:
    """The lab, both workers, the gateway, a zeep client and a spy on the policy topics."""

    lab: Lab
    gateway: GatewayServer
    workers: dict[str, subprocess.Popen[bytes]]
    logs: Path
    spied: list[str] = field(default_factory=list)
    client: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.port}/"

    def status(self) -> dict[str, dict[str, Any]]:
        """GetStatus through zeep, by node."""
        return _by_node(self.client.service.GetStatus(mobile_router="mr1"))

    def wait_status(self, check: Callable[[dict[str, dict[str, Any]]], bool]) -> None:
        deadline = time.monotonic() + 20
        while not check(self.status()):
            if time.monotonic() > deadline:
                pytest.fail(f"status never became as expected: {self.status()}")
            time.sleep(0.1)

    def call(self, name: str, version: int, op: Operation) -> dict[str, dict[str, Any]]:
        """One zeep call with the same operation for both nodes; results by node."""
        method = getattr(self.client.service, name)
        return _by_node(
            method(mobile_router="mr1", downlink=downlink(version, op), uplink=uplink(version, op))
        )

    def counts(self, dst: str = MNP6, port: int = 5001) -> tuple[int, int]:
        before = self.lab.tx_packets("b1"), self.lab.tx_packets("b2")
        netns.call_in(self.lab.sender, send_udp, dst, port, PACKETS)
        return self.lab.tx_packets("b1") - before[0], self.lab.tx_packets("b2") - before[1]

    def kernel(self) -> str:
        return netns.run(self.lab.router, ["nft", "list", "ruleset"])

    def log_tail(self) -> str:
        return "\n".join(p.read_text()[-2000:] for p in self.logs.glob("*.log"))


def _by_node(result: object) -> dict[str, dict[str, Any]]:
    """A zeep answer (a list of NodeResult or NodeStatus) as plain dicts by node."""
    rows: list[dict[str, Any]] = zeep.helpers.serialize_object(result)  # type: ignore[no-untyped-call]
    return {row["node"]: row for row in rows}


def _zeep_client(url: str) -> Any:
    """A zeep client generated from the gateway's WSDL (zeep is only partly typed)."""
    return zeep.Client(url)  # type: ignore[no-untyped-call]


def _on(counts: tuple[int, int], link: str) -> bool:
    b1, b2 = counts
    return (b2 >= PACKETS and b1 <= 1) if link == "b2" else (b1 >= PACKETS and b2 <= 1)


def _spy(broker: BrokerSettings, topic_root: str, seen: list[str]) -> mqtt.Client:
    """Records the node of every document published on a policy topic."""
    client = bus.make_client(
        broker.model_copy(update={"session_expiry_s": 0}), "spy-" + topic_root[5:15]
    )
    subscribed = threading.Event()
    client.on_connect = lambda c, *_: c.subscribe(f"{topic_root}/node/+/policy", qos=1)
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = lambda c, u, msg: seen.append(msg.topic.split("/")[-2])
    bus.start(client, broker)
    assert subscribed.wait(10)
    return client


@pytest.fixture
def bed(
    broker: tuple[str, int],
    topic_root: str,
    tmp_path: Path,
    make_netns: Callable[[str], str],
) -> Iterator[Bed]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    lab = Lab()
    mr_ns = make_netns("mr")
    netns.run(mr_ns, ["ip", "link", "add", "m0", "type", "veth", "peer", "name", "m1"])
    for link in ("m0", "m1"):
        netns.run(mr_ns, ["ip", "link", "set", link, "up"])
    for table in (3001, 3002):  # the MR's BIDs have routes, so both count as usable
        netns.run(mr_ns, ["ip", "route", "add", "default", "dev", "m0", "table", str(table)])
    broker_settings = BrokerSettings(host=broker[0], port=broker[1], topic_root=topic_root)
    (tmp_path / "ha").mkdir()
    ha_config = write_config(lab, tmp_path / "ha", "nftables", topic_root)
    # The HA forwards mirrored uplink sets of symmetric documents to the MR (scheme 2).
    ha_config.write_text(ha_config.read_text().replace("[prem]\n", '[prem]\npeer_node = "mr1"\n'))
    workers: dict[str, subprocess.Popen[bytes]] = {}
    gateway = GatewayServer(gateway_settings(), broker_settings)
    spied: list[str] = []
    spy = _spy(broker_settings, topic_root, spied)
    try:
        lab.build()
        for node, argv in (
            ("ha1", worker_argv(ha_config, lab.router)),
            ("mr1", worker_argv(_mr_config(tmp_path, topic_root), mr_ns)),
        ):
            with (tmp_path / f"{node}.log").open("wb") as log:
                workers[node] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        gateway.start()
        test_bed = Bed(lab, gateway, workers, tmp_path, spied)
        test_bed.client = _zeep_client(f"{test_bed.url}?wsdl")
        test_bed.wait_status(lambda s: s["ha1"]["online"] is True and s["mr1"]["online"] is True)
        yield test_bed
    finally:
        for proc in workers.values():
            proc.terminate()
        for proc in workers.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        gateway.stop()
        spy.disconnect()
        spy.loop_stop()
        lab.destroy()


def _brief(rows: dict[str, dict[str, Any]]) -> dict[str, tuple[str, int | None]]:
    return {node: (row["outcome"], row["version"]) for node, row in rows.items()}


def test_zeep_install_update_flush_and_status_move_real_traffic(bed: Bed) -> None:
    assert _on(bed.counts(), "b1"), "no policy: the default path"
    applied = bed.call("Install", 1, VIDEO2)
    assert _brief(applied) == {"ha1": ("applied", 1), "mr1": ("applied", 1)}, bed.log_tail()
    assert applied["ha1"]["direction"] == "downlink"
    assert applied["mr1"]["direction"] == "uplink"
    assert _on(bed.counts(), "b2")
    assert _on(bed.counts(MNP4), "b2")
    update = Update(replace=(udp_to("video", 5001, 1),), insert=(udp_to("b", 5002, 2),))
    assert _brief(bed.call("Update", 2, update)) == {"ha1": ("applied", 2), "mr1": ("applied", 2)}
    assert _on(bed.counts(), "b1")
    assert _on(bed.counts(port=5002), "b2")
    status = bed.status()
    assert {n: (s["online"], s["version"], s["last_result"]) for n, s in status.items()} == {
        "ha1": (True, 2, "applied"),
        "mr1": (True, 2, "applied"),
    }
    assert _brief(bed.call("Flush", 3, Flush())) == {"ha1": ("applied", 3), "mr1": ("applied", 3)}
    assert _on(bed.counts(port=5002), "b1"), "flush: back to the default path"
    assert "multinet" in bed.kernel(), "the worker's table stays, empty of policies"
    assert bed.spied == ["ha1", "mr1"] * 3


def _envelope(operation: str, parts: dict[str, str]) -> bytes:
    inner = "".join(f"<g:{name}>{escape(value)}</g:{name}>" for name, value in parts.items())
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<soap:Envelope xmlns:soap="{SOAP_ENV}" xmlns:g="{GW}"><soap:Body>'
        f"<g:{operation}>{inner}</g:{operation}></soap:Body></soap:Envelope>"
    ).encode()


def _post(bed: Bed, body: bytes, operation: str = "Install") -> tuple[int, etree._Element]:
    request = urllib.request.Request(
        bed.url,
        data=body,
        headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{operation}"'},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, etree.fromstring(response.read())
    except urllib.error.HTTPError as error:
        return error.code, etree.fromstring(error.read())


def _fault(root: etree._Element) -> tuple[str, str]:
    code, text = root.find(".//faultcode"), root.find(".//faultstring")
    assert code is not None, etree.tostring(root)
    assert text is not None
    return str(code.text).split(":", 1)[1], str(text.text)


def test_hand_written_envelope_works(bed: Bed) -> None:
    body = _envelope(
        "Install",
        {"mobile_router": "mr1", "downlink": downlink(1, VIDEO2), "uplink": uplink(1, VIDEO2)},
    )
    code, root = _post(bed, body)
    assert code == 200
    outcomes = {
        str(row.findtext(f"{{{GW}}}node")): str(row.findtext(f"{{{GW}}}outcome"))
        for row in root.iter(f"{{{GW}}}NodeResult")
    }
    assert outcomes == {"ha1": "applied", "mr1": "applied"}
    assert _on(bed.counts(), "b2")


def test_bad_calls_get_their_fault_and_reach_no_worker(bed: Bed) -> None:
    assert _brief(bed.call("Install", 1, VIDEO2))["ha1"] == ("applied", 1)
    kernel, delivered = bed.kernel(), list(bed.spied)
    good_down, good_up = downlink(2, Flush()), uplink(2, Flush())
    wrong_ns = good_up.replace("urn:multinet:flow-policy:1", "urn:other:1")

    def parts(**change: str) -> dict[str, str]:
        return {"mobile_router": "mr1", "downlink": good_down, "uplink": good_up, **change}

    cases: list[tuple[str, bytes, int, str, str]] = [
        (
            "Flush",
            _envelope("Flush", parts(downlink="<policy-message")),
            500,
            "Client.InvalidDocument",
            "downlink: line 1: not well-formed XML",
        ),
        (
            "Flush",
            _envelope("Flush", parts(uplink=wrong_ns)),
            500,
            "Client.InvalidDocument",
            "uplink: line 2: expected namespace",
        ),
        (
            "Flush",
            _envelope("Flush", {"mobile_router": "mr1", "downlink": good_down}),
            500,
            "Client.MissingPart",
            "uplink",
        ),
        ("Flush", _envelope("Flush", parts(uplink="")), 500, "Client.MissingPart", "uplink"),
        (
            "Flush",
            _envelope("Flush", parts(mobile_router="mr7")),
            500,
            "Client.UnknownMobileRouter",
            "'mr7'",
        ),
        (
            "Install",
            _envelope("Install", parts()),
            500,
            "Client.OperationMismatch",
            "a install call carries a <flush> document",
        ),
        (
            "Flush",
            _envelope("Flush", parts(downlink=good_up, uplink=good_down)),
            500,
            "Client.NodeMismatch",
            "downlink: field node: is 'mr1', expected 'ha1'",
        ),
        (
            "Flush",
            _envelope(
                "Flush", parts(downlink=good_down.replace("?>", '?><!DOCTYPE p [<!ENTITY a "b">]>'))
            ),
            500,
            "Client.InvalidDocument",
            "DOCTYPE is not allowed",
        ),
        (
            "Flush",
            _envelope("Flush", parts(uplink="<x>" + "a" * 300_000 + "</x>")),
            413,
            "Client.RequestTooLarge",
            "over the limit",
        ),
        (
            "Flush",
            b'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
            + _envelope("Flush", parts(mobile_router="&b;")).split(b"?>", 1)[1],
            500,
            "Client.DTDNotAllowed",
            "DOCTYPE",
        ),
        ("Flush", b"<soap:Envelope", 500, "Client.XMLSyntaxError", ""),
    ]
    for operation, body, http_code, fault, text in cases:
        code, root = _post(bed, body, operation)
        assert (code, *_fault(root)[:1]) == (http_code, fault), (fault, _fault(root))
        assert text in _fault(root)[1], (fault, _fault(root))
    with pytest.raises(zeep.exceptions.Fault) as info:
        bed.client.service.Install(mobile_router="mr1", downlink=good_down, uplink=good_up)
    assert info.value.code.endswith("Client.OperationMismatch")
    assert bed.spied == delivered, "no invalid call reached a worker"
    assert bed.kernel() == kernel
    status = bed.status()
    assert [(status[n]["version"], status[n]["last_result"]) for n in ("ha1", "mr1")] == [
        (1, "applied"),
        (1, "applied"),
    ]
    assert _on(bed.counts(), "b2")


def test_stale_version_is_refused_by_the_workers_with_their_reason(bed: Bed) -> None:
    assert _brief(bed.call("Install", 1, VIDEO2))["mr1"] == ("applied", 1)
    stale = bed.call("Update", 1, Update(replace=(udp_to("video", 5001, 1),)))
    assert _brief(stale) == {"ha1": ("refused", 1), "mr1": ("refused", 1)}
    reasons = stale["ha1"]["reasons"]["Reason"]
    assert "stale or replayed version 1" in reasons[0]["reason"]
    assert reasons[0]["field"] == "version"
    status = bed.status()["ha1"]
    assert (status["version"], status["last_result"], status["refused_version"]) == (
        1,
        "refused",
        1,
    )
    assert "stale" in status["reasons"]["Reason"][0]["reason"]
    assert _on(bed.counts(), "b2"), "the refused update changed nothing"
    # Only the worker knows its version: one node may apply while the other refuses.
    moved = Update(replace=(udp_to("video", 5001, 1),))
    mixed = _by_node(
        bed.client.service.Update(
            mobile_router="mr1", downlink=downlink(2, moved), uplink=uplink(1, moved)
        )
    )
    assert _brief(mixed) == {"ha1": ("applied", 2), "mr1": ("refused", 1)}
    assert _on(bed.counts(), "b1")


def test_a_worker_that_is_down_is_not_reached_and_shown_offline(bed: Bed) -> None:
    bed.workers["mr1"].terminate()
    assert bed.workers["mr1"].wait(10) == 0
    bed.wait_status(lambda s: s["mr1"]["online"] is False)
    started = time.monotonic()
    result = bed.call("Install", 1, VIDEO2)
    assert _brief(result) == {"ha1": ("applied", 1), "mr1": ("not-reached", None)}
    assert time.monotonic() - started >= bed.gateway.settings.ack_deadline_s
    assert _on(bed.counts(), "b2")


def test_scheme_2_symmetric_downlink_only_reaches_both_nodes(bed: Bed) -> None:
    symmetric = message(1, VIDEO2).model_copy(update={"symmetric": True})
    document = policy_xml.render(symmetric).decode()
    results = _by_node(bed.client.service.Install(mobile_router="mr1", downlink=document))
    assert _brief(results) == {"ha1": ("applied", 1), "mr1": ("applied", 1)}, bed.log_tail()
    assert results["mr1"]["direction"] == "uplink"
    assert _on(bed.counts(), "b2")
    assert bed.status()["mr1"]["version"] == 1
