"""The real worker, its own process, in a namespace lab, driven over the real broker.

Real UDP and TCP traffic; the router's per-link packet counters show which BID a flow takes.
Every test runs for both kernel back ends.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from labs.prem import MNP4, MNP6, Lab, send_udp, worker_argv, write_config
from services import netns
from services.contracts import policy_xml
from services.contracts.messages import PolicyStatus
from services.contracts.policy import Flush, Install, Operation, Policy, Update
from services.contracts.settings import BrokerSettings
from services.prem.client import PolicyClient
from tests.features import need_backend
from tests.prem.factories import message, udp_to

pytestmark = [pytest.mark.kernel, pytest.mark.broker]
PACKETS = 100
MAX_POLICIES = 50  # the lab worker's limits.max_policies
COUNTERS = re.compile(r"\[\d+:\d+\]")  # packet counters of built-in chains: not state we own


@dataclass
class Running:
    """A lab with a live worker and a client talking to it."""

    lab: Lab
    client: PolicyClient
    config: Path
    log: Path
    backend: str
    proc: subprocess.Popen[bytes] | None = None
    version: int = 0

    def start(self) -> None:
        """Start (or restart) the worker process and wait for its hello."""
        self.proc = subprocess.Popen(
            worker_argv(self.config, self.lab.router),
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        self.client.wait_online("ha1", timeout_s=20)

    def send(self, op: Operation, *, version: int | None = None) -> PolicyStatus:
        """Deliver one operation with the next version (or the one given)."""
        if version is None:
            self.version += 1
            version = self.version
        return self.client.deliver("ha1", policy_xml.render(message(version, op)), timeout_s=15)

    def apply(self, op: Operation) -> PolicyStatus:
        """Deliver and require that the worker applied it."""
        status = self.send(op)
        assert status.result == "applied", (status, self.log.read_text()[-3000:])
        return status

    def counts(self, dst: str = MNP6, port: int = 5001, n: int = PACKETS) -> tuple[int, int]:
        """Send n datagrams from the sender; return how many left by b1 and by b2."""
        before = self.lab.tx_packets("b1"), self.lab.tx_packets("b2")
        netns.call_in(self.lab.sender, send_udp, dst, port, n)
        return self.lab.tx_packets("b1") - before[0], self.lab.tx_packets("b2") - before[1]

    def kernel_dump(self) -> str:
        """What the router's kernel holds, read by independent tools."""
        parts = [
            netns.run(self.lab.router, ["nft", "list", "ruleset"]),
            netns.run(self.lab.router, ["ip", "-6", "rule", "show"]),
            netns.run(self.lab.router, ["ip", "-4", "rule", "show"]),
        ]
        for tool in ("ip6tables-legacy-save", "iptables-legacy-save"):
            out = netns.run(self.lab.router, [tool, "-t", "mangle"], check=False)
            lines = (line for line in out.splitlines() if not line.startswith("#"))
            parts.append(COUNTERS.sub("[-]", "\n".join(lines)))
        return "\n".join(parts)


def _on(counts: tuple[int, int], link: str) -> bool:
    """All (allowing one stray packet) of the datagrams left by `link`."""
    b1, b2 = counts
    return (b2 >= PACKETS and b1 <= 1) if link == "b2" else (b1 >= PACKETS and b2 <= 1)


@pytest.fixture(params=["nftables", "iptables"])
def running(
    request: pytest.FixtureRequest, broker: tuple[str, int], topic_root: str, tmp_path: Path
) -> Iterator[Running]:
    if os.geteuid() != 0:
        pytest.skip("needs root") if os.environ.get("CI") != "true" else pytest.fail("needs root")
    need_backend(str(request.param))
    lab = Lab()
    lab.build()
    client = PolicyClient(BrokerSettings(host=broker[0], port=broker[1], topic_root=topic_root))
    backend = str(request.param)
    config = write_config(lab, tmp_path, backend, topic_root)
    text = config.read_text().replace(
        "[prem]\n", f"[prem]\nlimits = {{ max_policies = {MAX_POLICIES} }}\n"
    )
    config.write_text(text)
    run = Running(
        lab,
        client,
        config,
        tmp_path / "worker.log",
        backend,
    )
    try:
        run.start()
        yield run
    finally:
        if run.proc is not None and run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()
        client.close()
        lab.destroy()


def test_flow_follows_its_policy_moves_on_update_and_returns(running: Running) -> None:
    assert _on(running.counts(), "b1"), "without policy the default path is BID 1"
    running.apply(Install(policies=(udp_to("video", 5001, 2),)))
    assert _on(running.counts(), "b2")
    assert _on(running.counts(MNP4), "b2"), "the same policy covers IPv4"
    assert _on(running.counts(port=5002), "b1"), "other flows are untouched"
    running.apply(Update(replace=(udp_to("video", 5001, 1),), insert=(udp_to("b", 5002, 2),)))
    assert _on(running.counts(), "b1")
    assert _on(running.counts(port=5002), "b2")
    running.apply(Update(delete=("b",)))
    assert _on(running.counts(port=5002), "b1"), "deleted policy: back to the default"
    running.apply(Install(policies=(udp_to("video", 5001, 2),)))
    running.apply(Flush())
    assert _on(running.counts(), "b1"), "flush: back to the default"


def test_priority_and_drop(running: Running) -> None:
    broad = Policy.model_validate(
        {
            "id": "all-udp",
            "priority": 50,
            "selector": {"next_header": 17},
            "action": {"kind": "forward", "bid": 2},
        }
    )
    running.apply(Install(policies=(broad, udp_to("blocked", 5003, None, priority=5))))
    assert _on(running.counts(port=5009), "b2")
    assert running.counts(port=5003) == (0, 0), "dropped before either link"


def test_every_bad_input_is_refused_and_the_kernel_is_unchanged(running: Running) -> None:
    running.apply(Install(policies=(udp_to("video", 5001, 2),)))
    before = running.kernel_dump()
    good = policy_xml.render(message(9, Install(policies=(udp_to("x", 1, 1), udp_to("y", 2, 1)))))
    too_many = tuple(udp_to(f"p{i}", 1000 + i, 1) for i in range(MAX_POLICIES + 1))
    bad_documents = [
        good.replace(policy_xml.NAMESPACE.encode(), b"urn:other:1"),  # wrong namespace
        good.replace(b"<next-header>17</next-header>", b"", 1),  # ports without a protocol
        good.replace(b'id="y"', b'id="x"'),  # duplicate policy id
        policy_xml.render(message(9, Install(policies=too_many))),  # over the policy limit
        b"<policy-message",  # not XML
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>',
        policy_xml.render(message(1, Flush())),  # replayed version
        policy_xml.render(message(9, Flush(), node="mr1", direction="uplink")),  # another node
        policy_xml.render(message(9, Install(policies=(udp_to("x", 1, 7),)))),  # unknown BID
        policy_xml.render(message(9, Update(delete=("nope",)))),
    ]
    for document in bad_documents:
        status = running.client.deliver("ha1", document, timeout_s=15)
        assert status.result == "refused", document[:80]
        assert status.refusals
        assert status.refusals[0].reason
        assert status.version == 1
    # Over the size limit: the worker announced its maximum packet size (services/bus.py), so
    # even this broker, which has no limit of its own, never hands it the document: the next
    # status answers the document published after it.
    oversized = b"<x>" + b"a" * (5 * 1024 * 1024) + b"</x>"
    topic = running.client.topics.policy("ha1")
    running.client.client.publish(topic, oversized, qos=1).wait_for_publish(15)
    status = running.client.deliver("ha1", bad_documents[6], timeout_s=15)
    assert (status.result, status.requested_version) == ("refused", 1), "the replay's answer"
    assert running.kernel_dump() == before
    assert _on(running.counts(), "b2")


def test_long_tcp_transfer_moves_between_bids_without_loss(running: Running) -> None:
    tcp = Policy.model_validate(
        {
            "id": "bulk",
            "priority": 10,
            "selector": {"next_header": 6, "dst_port": {"first": 5201, "last": 5201}},
            "action": {"kind": "forward", "bid": 2},
        }
    )
    running.apply(Install(policies=(tcp,)))
    sink = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            running.lab.receiver,
            sys.executable,
            "-m",
            "labs.traffic",
            "sink",
            "--port",
            "5201",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sink.stdout is not None
    assert "listening" in sink.stdout.readline()
    total = 20 * 1024 * 1024
    start_b1, start_b2 = running.lab.tx_packets("b1"), running.lab.tx_packets("b2")
    source = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            running.lab.sender,
            sys.executable,
            "-m",
            "labs.traffic",
            "source",
            "--host",
            MNP6,
            "--port",
            "5201",
            "--bytes",
            str(total),
            "--seconds",
            "4",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    for bid in (1, 2, 1):
        time.sleep(0.8)  # let the transfer run on the current pipe for a while
        moved = tcp.model_copy(update={"action": tcp.action.model_copy(update={"bid": bid})})
        running.apply(Update(replace=(moved,)))
    sent = json.loads(source.communicate(timeout=60)[0].splitlines()[-1])
    received = json.loads(sink.communicate(timeout=60)[0].splitlines()[-1])
    assert sent == {**sent, "bytes": total, "error": ""}
    assert received == {"bytes": total, "error": ""}
    assert running.lab.tx_packets("b1") - start_b1 > 100
    assert running.lab.tx_packets("b2") - start_b2 > 100


def test_fast_fallback_on_carrier_loss_and_back(running: Running) -> None:
    running.apply(Install(policies=(udp_to("video", 5001, 2, fallbacks=(1,)),)))
    assert _on(running.counts(), "b2")
    t0 = time.monotonic()
    netns.run(running.lab.receiver, ["ip", "link", "set", "d2", "down"])
    status = running.client.next_status("ha1", timeout_s=5)
    reaction = time.monotonic() - t0
    assert status.result == "fallback"
    assert [(f.policy_id, f.active_bid) for f in status.fallbacks] == [("video", 1)]
    assert reaction < 1.0, f"fallback took {reaction:.3f} s (bound is generous; see bench/)"
    assert _on(running.counts(), "b1")
    netns.run(running.lab.receiver, ["ip", "link", "set", "d2", "up"])
    status = running.client.next_status("ha1", timeout_s=5)
    assert (status.result, status.fallbacks) == ("fallback", ())
    assert _on(running.counts(), "b2")


def test_sigkill_leaves_traffic_enforced_and_restart_reconciles(running: Running) -> None:
    running.apply(Install(policies=(udp_to("video", 5001, 2),)))
    enforced = running.kernel_dump()
    assert running.proc is not None
    running.proc.send_signal(signal.SIGKILL)
    running.proc.wait()
    assert _on(running.counts(), "b2"), "traffic keeps its policy while the worker is down"
    running.start()
    assert running.kernel_dump() == enforced, "no orphaned or duplicated rules after restart"
    assert running.apply(Update(replace=(udp_to("video", 5001, 1),))).version == 2
    assert _on(running.counts(), "b1")


def test_sigterm_exits_cleanly_and_remove_on_exit_cleans_up(running: Running) -> None:
    running.apply(Install(policies=(udp_to("video", 5001, 2),)))
    assert running.proc is not None
    running.proc.terminate()
    assert running.proc.wait(10) == 0
    assert _on(running.counts(), "b2"), "a plain stop keeps what is enforced"
    config = running.config.read_text()
    running.config.write_text(config.replace("[prem]\n", "[prem]\nremove_on_exit = true\n"))
    running.start()
    running.proc.terminate()
    assert running.proc.wait(10) == 0
    dump = running.kernel_dump()
    assert "multinet" not in dump.lower()
    assert "lookup 1002" not in dump
    assert _on(running.counts(), "b1")


def test_document_published_while_the_worker_is_down_is_applied_on_return(
    running: Running,
) -> None:
    running.apply(Install(policies=(udp_to("video", 5001, 2),)))
    assert running.proc is not None
    running.proc.terminate()
    assert running.proc.wait(10) == 0
    doc = policy_xml.render(message(2, Update(replace=(udp_to("video", 5001, 1),))))
    running.client.watch("ha1")
    running.client.client.publish(running.client.topics.policy("ha1"), doc, qos=1).wait_for_publish(
        5
    )
    running.start()
    status = running.client.next_status("ha1", timeout_s=15)
    assert (status.result, status.version, status.replaced) == ("applied", 2, 1)
    assert _on(running.counts(), "b1")


def test_duplicate_document_copies_to_both_bids_and_falls_back_on_carrier_loss(
    running: Running,
) -> None:
    """A version-2 document through the broker: with nftables every datagram leaves by both
    links, and when b2 loses its carrier the copy goes to the next usable path (here none:
    the status lists BID 2 as skipped); with iptables the document is refused naming the back
    end, and the kernel is unchanged."""
    running.apply(Install(policies=(udp_to("video", 5001, 2),)))
    before = running.kernel_dump()
    duplicate = Policy.model_validate(
        {
            "id": "critical",
            "priority": 5,
            "selector": {"next_header": 17, "dst_port": {"first": 5001, "last": 5001}},
            "action": {"kind": "duplicate", "paths": [1, 2]},
        }
    )
    status = running.send(Update(insert=(duplicate,)))
    if running.backend == "iptables":
        assert status.result == "refused"
        assert [(r.policy_id, r.field) for r in status.refusals] == [("critical", "duplicate")]
        assert "iptables back end cannot enforce duplicate" in status.refusals[0].reason
        assert running.kernel_dump() == before
        return
    assert status.result == "applied", status
    assert _both(running.counts()), "every datagram on both links, one copy each"
    netns.run(running.lab.receiver, ["ip", "link", "set", "d2", "down"])
    status = running.client.next_status("ha1", timeout_s=5)
    assert status.result == "fallback"
    states = {f.policy_id: (f.active_bids, f.skipped_bids) for f in status.fallbacks}
    assert states["critical"] == ((1,), (2,))
    assert _on(running.counts(), "b1")
    netns.run(running.lab.receiver, ["ip", "link", "set", "d2", "up"])
    status = running.client.next_status("ha1", timeout_s=5)
    assert (status.result, status.fallbacks) == ("fallback", ())
    assert _both(running.counts())
    # BID 2's route loses its gateway (the table keeps a route, so BID 2 stays usable): a copy
    # has nowhere to go, the link watch's route events make the worker notice and say so
    table = str(running.lab.table_base + 2)
    route = ["ip", "-6", "route", "replace", "2001:db8:ff::/64"]
    netns.run(running.lab.router, [*route, "dev", "b2", "table", table])
    status = running.client.next_status("ha1", timeout_s=5)
    states = {f.policy_id: (f.active_bids, f.skipped_bids) for f in status.fallbacks}
    assert (status.result, states["critical"]) == ("fallback", ((1,), (2,)))
    assert _on(running.counts(), "b1")
    netns.run(running.lab.router, [*route, "via", "2001:db8:2::2", "table", table])
    status = running.client.next_status("ha1", timeout_s=5)
    assert (status.result, status.fallbacks) == ("fallback", ())
    assert _both(running.counts())


def _both(counts: tuple[int, int]) -> bool:
    """Every datagram left by both links, once each. Up to three stray packets each: a link
    that just came back up sends its unsolicited MLD reports (two, at random within its first
    second) while the datagrams are counted, once the worker answers that fast (the link
    watch no longer dumps routes after a carrier change). A second copy would be 100 more."""
    return all(PACKETS <= n <= PACKETS + 3 for n in counts)


def test_priority_document_fills_bid_1_and_falls_back_on_carrier_loss(running: Running) -> None:
    """A priority document through the broker: with nftables a light flow stays on its first
    tier; when b1 loses its carrier the class's flows take BID 2 (the status lists BID 1 as
    skipped), and return when it is back; with iptables the document is refused naming the
    back end, and the kernel is unchanged. (Overflow itself: tests/kernel/test_priority_kernel.)"""
    running.apply(Install(policies=(udp_to("video", 5001, 2),)))
    before = running.kernel_dump()
    priority = Policy.model_validate(
        {
            "id": "bulk",
            "priority": 5,
            "selector": {"next_header": 17, "dst_port": {"first": 5001, "last": 5001}},
            "action": {"kind": "priority", "tiers": [{"bid": 1, "rate_bps": 8e6}, {"bid": 2}]},
        }
    )
    status = running.send(Update(insert=(priority,)))
    if running.backend == "iptables":
        assert status.result == "refused"
        assert [(r.policy_id, r.field) for r in status.refusals] == [("bulk", "priority")]
        assert "iptables back end cannot enforce priority" in status.refusals[0].reason
        assert running.kernel_dump() == before
        return
    assert status.result == "applied", status
    assert _on(running.counts(), "b1"), "below 1 MB/s: the first tier"
    netns.run(running.lab.receiver, ["ip", "link", "set", "d1", "down"])
    status = running.client.next_status("ha1", timeout_s=5)
    assert status.result == "fallback"
    states = {f.policy_id: (f.active_bids, f.skipped_bids) for f in status.fallbacks}
    assert states["bulk"] == ((2,), (1,))
    assert _on(running.counts(), "b2")
    netns.run(running.lab.receiver, ["ip", "link", "set", "d1", "up"])
    status = running.client.next_status("ha1", timeout_s=5)
    assert (status.result, status.fallbacks) == ("fallback", ())
    assert _on(running.counts(), "b1")
