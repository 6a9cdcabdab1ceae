"""The delaying UDP responder: what it answers (pure), then its timing with real packets.

The delay tests measure RTTs the way the service will, through `ProbeWindow`, with probes
sent from the router namespace to a responder in the peer namespace.
"""

from __future__ import annotations

import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from pydantic import ValidationError

from services.contracts.errors import KernelError
from services.monitor.probe import (
    DEFAULT_PROBE_PORT,
    MAX_UDP_PROBE_BYTES,
    UDP_PROBE_BYTES,
    ProbeKind,
    Prober,
    ProbeTarget,
    UdpProbe,
    UdpProbeType,
    encode_udp_probe,
)
from services.monitor.responder import (
    Answer,
    AnswerQueue,
    DelayResponder,
    ResponderSettings,
    answer_for,
    reply_source,
    serve,
)
from services.wakeup import Stopper
from tests.monitor.test_probe import (
    Link,
    add_address,
    build_link,
    in_netns,
    open_in,
    run_probes,
    start_responder,
)

TOKEN = b"tokentok"
REQUEST = encode_udp_probe(UdpProbe(UdpProbeType.REQUEST, 7, 9, TOKEN))

# --- what is answered -------------------------------------------------------------------


def test_answer_is_the_request_marked_as_reply_and_of_the_same_size() -> None:
    padded = REQUEST + b"x" * 100
    answer = answer_for(padded)
    assert answer is not None
    assert len(answer) == len(padded)
    assert answer[5] == UdpProbeType.REPLY
    assert answer[:5] + answer[6:] == padded[:5] + padded[6:]


@pytest.mark.parametrize(
    ("datagram", "why"),
    [
        (encode_udp_probe(UdpProbe(UdpProbeType.REPLY, 7, 9, TOKEN)), "a reply: no ping-pong"),
        (b"hello, reflect me", "arbitrary payload"),
        (REQUEST + bytes(MAX_UDP_PROBE_BYTES - UDP_PROBE_BYTES + 1), "over the size bound"),
        (REQUEST[:-1], "truncated"),
    ],
)
def test_nothing_else_is_answered(datagram: bytes, why: str) -> None:
    assert answer_for(datagram) is None, why


def _pktinfo6(address: str, ifindex: int) -> list[tuple[int, int, bytes]]:
    packed = IPv6Address(address).packed
    return [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, struct.pack("16sI", packed, ifindex))]


@pytest.mark.parametrize(
    ("received", "expected"),
    [
        (_pktinfo6("fd00::2", 5), _pktinfo6("fd00::2", 0)),
        (_pktinfo6("fe80::2", 5), _pktinfo6("fe80::2", 5)),
        (_pktinfo6("::ffff:10.0.0.2", 5), _pktinfo6("::ffff:10.0.0.2", 0)),
        (_pktinfo6("ff02::1", 5), None),
        (_pktinfo6("::ffff:224.0.0.1", 5), None),
        ([], []),
    ],
)
def test_answers_leave_from_the_address_probed(
    received: list[tuple[int, int, bytes]], expected: list[tuple[int, int, bytes]] | None
) -> None:
    assert reply_source(received) == expected


def test_ipv4_answer_source_is_the_header_destination() -> None:
    received = [(socket.IPPROTO_IP, 8, struct.pack("I4s4s", 3, bytes(4), bytes([10, 0, 0, 2])))]
    assert reply_source(received) == [
        (socket.IPPROTO_IP, 8, struct.pack("I4s4s", 0, bytes([10, 0, 0, 2]), bytes(4)))
    ]
    multicast = [(socket.IPPROTO_IP, 8, struct.pack("I4s4s", 3, bytes(4), bytes([224, 0, 0, 1])))]
    assert reply_source(multicast) is None


# --- the queue of due answers -----------------------------------------------------------


def _answer(tag: bytes) -> Answer:
    return Answer(tag, ("::1", 1, 0, 0))


def test_queue_releases_answers_in_due_order_ties_in_arrival_order() -> None:
    queue = AnswerQueue()
    for due, tag in ((2.0, b"c"), (1.0, b"a"), (1.0, b"b"), (3.0, b"d")):
        assert queue.push(due, _answer(tag))

    assert queue.pop_due(0.5) == []
    assert [a.payload for a in queue.pop_due(2.0)] == [b"a", b"b", b"c"]
    assert len(queue) == 1


def test_queue_timeout_rounds_up_and_blocks_when_empty() -> None:
    queue = AnswerQueue()
    assert queue.timeout_ms(0.0) is None
    queue.push(1.0001, _answer(b"a"))
    assert queue.timeout_ms(1.0) == 1  # never wake before it is due
    assert queue.timeout_ms(2.0) == 0


def test_queue_is_bounded() -> None:
    queue = AnswerQueue(limit=2)
    assert [queue.push(1.0, _answer(b"x")) for _ in range(3)] == [True, True, False]


# --- settings -------------------------------------------------------------------------


def test_settings_defaults_and_parsing() -> None:
    assert ResponderSettings() == ResponderSettings(
        address=IPv6Address("::"), port=DEFAULT_PROBE_PORT, delay_ms=0.0, interface=None
    )
    parsed = ResponderSettings.model_validate(
        {"address": "10.0.0.1", "port": 9, "delay_ms": 150, "interface": "eth1"}
    )
    assert parsed.address == IPv4Address("10.0.0.1")
    assert DelayResponder.from_settings(parsed) is not None


@pytest.mark.parametrize(
    "values",
    [
        {"delay_ms": -1},
        {"delay_ms": 10_001},
        {"port": 65536},
        {"address": "not-an-address"},
        {"interface": "a-name-that-is-too-long"},
        {"delay": 100},  # unknown key
    ],
)
def test_settings_refuse(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ResponderSettings.model_validate(values)


def test_settings_are_frozen() -> None:
    settings = ResponderSettings()
    with pytest.raises(ValidationError):
        settings.delay_ms = 5  # type: ignore[misc]


@pytest.mark.parametrize("delay_s", [-0.001, 10.001])
def test_responder_refuses_a_delay_out_of_bounds(delay_s: float) -> None:
    with pytest.raises(ValueError, match="delay_s"):
        DelayResponder(delay_s=delay_s)


# --- real packets ---------------------------------------------------------------------

DELAY_S = 0.1


@pytest.fixture
def link(make_netns: Callable[[str], str]) -> Link:
    """A router namespace with one link to a peer namespace."""
    return build_link(make_netns("mr"), make_netns("peer"), "a", 4301, 1)


def _udp_prober(link: Link, port: int, version: int = 6) -> Prober:
    target = ProbeTarget(ProbeKind.UDP, link.peer_ip(version), port=port)
    return open_in(link.router, target)


@pytest.mark.kernel
def test_rtt_is_within_ten_percent_of_the_configured_delay(link: Link) -> None:
    responder = start_responder(link.peer, port=0, delay_s=DELAY_S)
    prober = _udp_prober(link, responder.port)
    try:
        run = run_probes(prober, list(range(10)), interval_s=0.05)
    finally:
        prober.close()
        responder.stop()

    stats = run.window.snapshot()
    assert stats.answered == 10
    assert stats.rtt_mean_ms == pytest.approx(DELAY_S * 1000, rel=0.10)
    assert all(DELAY_S <= rtt <= DELAY_S * 1.10 for rtt in run.rtts.values())  # never early


@pytest.mark.kernel
def test_concurrent_probes_are_not_serialised(link: Link) -> None:
    responder = start_responder(link.peer, port=0, delay_s=DELAY_S)
    prober = _udp_prober(link, responder.port)
    try:
        run = run_probes(prober, list(range(5)), interval_s=0.01)
    finally:
        prober.close()
        responder.stop()

    assert sorted(run.rtts) == list(range(5))
    assert all(rtt == pytest.approx(DELAY_S, rel=0.10) for rtt in run.rtts.values())
    # All five were in flight together: the last left before the first came back.
    assert max(run.sent_at.values()) < min(run.sent_at[s] + run.rtts[s] for s in run.rtts)


@pytest.mark.kernel
def test_garbage_and_multicast_are_not_answered(link: Link) -> None:
    responder = start_responder(link.peer)

    def exchange() -> list[bytes]:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, link.router_dev.encode())
            peer = (str(link.peer_ip(6)), DEFAULT_PROBE_PORT)
            for junk in (b"garbage", answer_for(REQUEST), REQUEST + bytes(MAX_UDP_PROBE_BYTES)):
                assert junk is not None
                sock.sendto(junk, peer)
            sock.sendto(REQUEST, ("ff02::1", DEFAULT_PROBE_PORT))
            sock.sendto(REQUEST, peer)  # answered; anything answered before would come first
            sock.settimeout(2)
            return [sock.recv(4096)]

    try:
        received = in_netns(link.router, exchange)
    finally:
        responder.stop()
    stats = responder.stats  # read after the thread has ended: it counts after sending

    assert received == [answer_for(REQUEST)]
    assert (stats.received, stats.refused, stats.answered) == (5, 4, 1)


@pytest.mark.kernel
@pytest.mark.parametrize("version", [6, 4])
def test_answers_come_from_the_address_probed(link: Link, version: int) -> None:
    second = ip_address("fd00:1::3" if version == 6 else "10.77.1.3")
    add_address(link.peer, link.peer_dev, f"{second}/{64 if version == 6 else 24}")
    responder = start_responder(link.peer)  # on "::", dual-stack
    probers = [
        open_in(link.router, ProbeTarget(ProbeKind.UDP, address))
        for address in (link.peer_ip(version), second)
    ]
    try:
        # A prober takes answers only from its target address.
        answered = [run_probes(p, [1, 2]).window.snapshot().answered for p in probers]
    finally:
        for prober in probers:
            prober.close()
        responder.stop()

    assert answered == [2, 2]


def wait_until(condition: Callable[[], bool], deadline_s: float = 2.0) -> bool:
    """Poll `condition` until it holds or the deadline passes; return its last value."""
    deadline = time.monotonic() + deadline_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


@pytest.mark.kernel
def test_requests_beyond_the_queue_bound_are_dropped_and_stop_does_not_wait(link: Link) -> None:
    responder = start_responder(link.peer, port=0, delay_s=5.0, max_pending=2)
    prober = _udp_prober(link, responder.port)
    try:
        for seq in range(4):
            assert prober.send(seq)
        assert wait_until(lambda: responder.stats.received == 4)
    finally:
        prober.close()
        began = time.monotonic()
        responder.stop()
    stopped_in = time.monotonic() - began
    stats = responder.stats

    assert (stats.received, stats.dropped, stats.answered) == (4, 2, 0)
    assert stopped_in < 0.5  # the stop pipe wakes poll; due answers are dropped


@pytest.mark.kernel
def test_serve_answers_until_its_stopper_is_set(link: Link) -> None:
    stopper = Stopper()
    settings = ResponderSettings(delay_ms=20)
    failed: list[BaseException] = []

    def serving() -> None:
        try:
            in_netns(link.peer, lambda: serve(settings, stopper))
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=serving)
    thread.start()
    prober = _udp_prober(link, DEFAULT_PROBE_PORT)
    try:
        # The responder may not be bound yet: resend until one probe comes back.
        seq = 0
        deadline = time.monotonic() + 3
        answered = 0
        while not answered and time.monotonic() < deadline:
            seq += 1
            answered = run_probes(prober, [seq], timeout_s=0.2).window.snapshot().answered
    finally:
        prober.close()
        stopper.stop()
        thread.join(5)
        stopper.close()

    assert answered == 1
    assert not thread.is_alive()
    assert failed == []


@pytest.mark.kernel
def test_binding_to_an_unknown_interface_names_it(link: Link) -> None:
    responder = DelayResponder(port=0, interface="nosuch0")
    with pytest.raises(KernelError, match="nosuch0"):
        in_netns(link.peer, responder.open)


def _responder_process(ns: str, settings: str) -> subprocess.Popen[str]:
    """`serve_forever` the way the CLI runs it: a process of its own inside namespace `ns`."""
    code = (
        "import sys\n"
        "from services.monitor.responder import ResponderSettings, serve_forever\n"
        f"sys.exit(serve_forever(ResponderSettings.model_validate_json({settings!r})))\n"
    )
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", code],
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.kernel
def test_serve_forever_answers_until_sigterm_and_exits_zero(link: Link) -> None:
    process = _responder_process(link.peer, ResponderSettings().model_dump_json())
    prober = _udp_prober(link, DEFAULT_PROBE_PORT)
    try:
        seq = 0
        answered = 0
        deadline = time.monotonic() + 10  # the child imports pydantic first
        while not answered and time.monotonic() < deadline:
            seq += 1
            answered = run_probes(prober, [seq], timeout_s=0.2).window.snapshot().answered
    finally:
        prober.close()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=5)

    assert answered == 1
    assert process.returncode == 0, stderr


@pytest.mark.kernel
def test_serve_forever_exits_one_naming_an_unknown_interface(link: Link) -> None:
    settings = ResponderSettings(interface="nosuch0").model_dump_json()
    process = _responder_process(link.peer, settings)
    _, stderr = process.communicate(timeout=10)

    assert process.returncode == 1
    assert "nosuch0" in stderr
