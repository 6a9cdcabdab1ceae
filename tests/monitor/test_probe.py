"""Probe sockets: the wire formats (pure), then real packets between network namespaces.

Kernel tests build a router namespace ("mr") with one veth per link to a peer namespace. Probe
sockets are opened by a short-lived thread that entered the router namespace; a socket stays
in the namespace it was made in, so the test thread drives it from the host namespace, the
way the monitor's single loop thread will. Results go through `ProbeWindow`, as in the
service, and are checked through independent readers where it matters (the peer's ICMP
counters, the interfaces' packet counters, the responder's counters).
"""

from __future__ import annotations

import json
import math
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import TypeVar

import pytest

from services import netns
from services.contracts.errors import ConfigError, KernelError
from services.monitor.probe import (
    DEFAULT_PROBE_PORT,
    ICMP6_ECHO_REPLY,
    ICMP_ECHO_REPLY,
    MAX_UDP_PROBE_BYTES,
    UDP_PROBE_BYTES,
    IPAddress,
    ProbeKind,
    Prober,
    ProbeTarget,
    UdpProbe,
    UdpProbeType,
    decode_udp_probe,
    encode_echo_request,
    encode_udp_probe,
    icmp_checksum,
    open_prober,
    parse_echo_reply,
)
from services.monitor.responder import DelayResponder, answer_for
from services.monitor.stats import ProbeSettings, ProbeWindow

T = TypeVar("T")
IDENT = 0x4D4E
TOKEN = bytes(range(8))


# --- wire formats ------------------------------------------------------------------------


def test_udp_probe_round_trip() -> None:
    probe = UdpProbe(UdpProbeType.REQUEST, 2**32 - 1, 2**32 - 1, TOKEN)
    datagram = encode_udp_probe(probe)
    assert len(datagram) == UDP_PROBE_BYTES
    assert decode_udp_probe(datagram) == probe
    assert decode_udp_probe(datagram + bytes(MAX_UDP_PROBE_BYTES - UDP_PROBE_BYTES)) == probe


def _with(datagram: bytes, offset: int, value: bytes) -> bytes:
    return datagram[:offset] + value + datagram[offset + len(value) :]


_GOOD = encode_udp_probe(UdpProbe(UdpProbeType.REPLY, IDENT, 7, TOKEN))


@pytest.mark.parametrize(
    ("datagram", "why"),
    [
        (b"", "empty"),
        (_GOOD[:-1], "one byte short"),
        (_GOOD + bytes(MAX_UDP_PROBE_BYTES - UDP_PROBE_BYTES + 1), "over the size bound"),
        (_with(_GOOD, 0, b"XNPB"), "wrong magic"),
        (_with(_GOOD, 4, b"\x02"), "unknown version"),
        (_with(_GOOD, 5, b"\x03"), "unknown type"),
        (_with(_GOOD, 6, b"\x00\x01"), "reserved field set"),
    ],
)
def test_udp_probe_decode_refuses(datagram: bytes, why: str) -> None:
    assert decode_udp_probe(datagram) is None, why


def test_icmpv4_request_carries_a_valid_checksum() -> None:
    packet = encode_echo_request(4, IDENT, 70000, TOKEN)
    assert icmp_checksum(packet) == 0
    assert packet[0] == 8


def _reply(version: int, ident: int, seq: int, token: bytes) -> bytes:
    """The echo reply a kernel would send for our request (for IPv4 with an IP header)."""
    request = bytearray(encode_echo_request(version, ident, seq, token))
    request[0] = ICMP6_ECHO_REPLY if version == 6 else ICMP_ECHO_REPLY
    request[2:4] = b"\0\0"
    if version == 6:
        return bytes(request)
    request[2:4] = icmp_checksum(bytes(request)).to_bytes(2, "big")
    return bytes([0x45]) + bytes(19) + bytes(request)


def test_icmp_reply_carries_the_full_32_bit_seq_across_the_16_bit_wrap() -> None:
    seq = 3 * 65536 + 5
    request = encode_echo_request(6, IDENT, seq, TOKEN)
    assert int.from_bytes(request[6:8], "big") == 5  # the header field wraps
    assert parse_echo_reply(6, _reply(6, IDENT, seq, TOKEN), IDENT, TOKEN) == seq
    assert parse_echo_reply(4, _reply(4, IDENT, seq, TOKEN), IDENT, TOKEN) == seq


def _corrupt_v4(packet: bytes) -> bytes:
    return packet[:-1] + bytes([packet[-1] ^ 1])


@pytest.mark.parametrize(
    ("version", "packet", "why"),
    [
        (6, _reply(6, IDENT + 1, 9, TOKEN), "another identifier"),
        (6, _reply(6, IDENT, 9, bytes(8)), "another prober's token"),
        (6, encode_echo_request(6, IDENT, 9, TOKEN), "a request, not a reply"),
        (6, _reply(6, IDENT, 9, TOKEN)[:-1], "truncated"),
        (6, _with(_reply(6, IDENT, 9, TOKEN), 6, b"\x00\x08"), "header seq disagrees"),
        (4, _corrupt_v4(_reply(4, IDENT, 9, TOKEN)), "bad checksum"),
        (4, _reply(6, IDENT, 9, TOKEN), "not an IPv4 packet"),
        (4, b"", "empty"),
    ],
)
def test_icmp_reply_parse_refuses(version: int, packet: bytes, why: str) -> None:
    assert parse_echo_reply(version, packet, IDENT, TOKEN) is None, why


@pytest.mark.parametrize(
    ("kwargs", "bad_field"),
    [
        ({"port": 0}, "port"),
        ({"port": 65536}, "port"),
        ({"interface": "a-name-that-is-too-long"}, "interface"),
        ({"interface": ""}, "interface"),
        ({"source": IPv4Address("10.0.0.1")}, "source"),
        ({"address": IPv6Address("fe80::1")}, "interface"),
        ({"address": IPv6Address("ff02::1")}, "address"),
        ({"address": IPv6Address("::")}, "address"),
    ],
)
def test_target_refuses(kwargs: dict[str, object], bad_field: str) -> None:
    arguments: dict[str, object] = {"kind": ProbeKind.UDP, "address": IPv6Address("fd00::1")}
    arguments.update(kwargs)
    with pytest.raises(ConfigError) as caught:
        ProbeTarget(**arguments)  # type: ignore[arg-type]
    assert [p.field for p in caught.value.problems] == [bad_field]


@pytest.mark.parametrize(("kind", "ident"), [(ProbeKind.ICMP, 2**16), (ProbeKind.UDP, -1)])
def test_ident_out_of_range_is_refused_before_any_socket(kind: ProbeKind, ident: int) -> None:
    with pytest.raises(ValueError, match="ident"):
        open_prober(ProbeTarget(kind, IPv6Address("fd00::1")), ident=ident)


# --- namespace helpers (test_responder.py uses them too) --------------------------------


def in_netns(name: str, fn: Callable[[], T]) -> T:
    """Run `fn` in a short-lived thread inside namespace `name`; sockets it opens stay there."""
    result: list[T] = []
    failed: list[BaseException] = []

    def target() -> None:
        try:
            netns.enter(name)
            result.append(fn())
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return result[0]


@dataclass(frozen=True)
class Link:
    """One veth between the router namespace and a peer namespace, addressed on both ends."""

    router: str
    peer: str
    router_dev: str
    peer_dev: str
    subnet: int

    def router_ip(self, version: int) -> IPAddress:
        return ip_address(f"fd00:{self.subnet}::1" if version == 6 else f"10.77.{self.subnet}.1")

    def peer_ip(self, version: int) -> IPAddress:
        return ip_address(f"fd00:{self.subnet}::2" if version == 6 else f"10.77.{self.subnet}.2")


def add_address(ns: str, dev: str, address: str) -> None:
    """Add an address (IPv6 without DAD, so it is usable at once) to `dev` in `ns`."""
    extra = ["nodad"] if ":" in address else []
    netns.run(ns, ["ip", "addr", "add", address, "dev", dev, *extra])


def build_link(router: str, peer: str, name: str, index: int, subnet: int) -> Link:
    """A veth `r-NAME` (ifindex `index`) <-> `p-NAME` with fd00:SUBNET::/64 and 10.77.SUBNET/24."""
    link = Link(router, peer, f"r-{name}", f"p-{name}", subnet)
    netns.veth(router, link.router_dev, peer, link.peer_dev, index)
    for ns, dev, host in ((router, link.router_dev, 1), (peer, link.peer_dev, 2)):
        add_address(ns, dev, f"fd00:{subnet}::{host}/64")
        add_address(ns, dev, f"10.77.{subnet}.{host}/24")
        add_address(ns, dev, f"fe80::{host}/64")
    return link


def open_in(ns: str, target: ProbeTarget, ident: int = IDENT) -> Prober:
    """A prober whose socket lives in namespace `ns`."""
    return in_netns(ns, lambda: open_prober(target, ident=ident))


def start_responder(ns: str, **kwargs: object) -> DelayResponder:
    """A DelayResponder serving in namespace `ns` (stop it when done)."""
    responder = DelayResponder(**kwargs)  # type: ignore[arg-type]
    in_netns(ns, responder.start)
    return responder


def counter(ns: str, name: str) -> int:
    """One of the namespace's /proc/net/snmp6 counters (e.g. Icmp6InEchos)."""
    for line in netns.run(ns, ["cat", "/proc/net/snmp6"]).splitlines():
        key, _, value = line.partition(" ")
        if key == name:
            return int(value)
    raise KeyError(name)


def tx_packets(ns: str, dev: str) -> int:
    """Packets `dev` has sent, read from the kernel by `ip -s link` (not by the prober)."""
    shown = json.loads(netns.run(ns, ["ip", "-j", "-s", "link", "show", "dev", dev]))
    return int(shown[0]["stats64"]["tx"]["packets"])


@dataclass
class Run:
    """What a probe run saw: the window as the service keeps it, RTTs and send results."""

    window: ProbeWindow
    rtts: dict[int, float] = field(default_factory=dict)
    sent: list[bool] = field(default_factory=list)
    sent_at: dict[int, float] = field(default_factory=dict)


def run_probes(
    prober: Prober,
    seqs: list[int],
    *,
    interval_s: float = 0.02,
    timeout_s: float = 1.0,
    window: ProbeWindow | None = None,
) -> Run:
    """What the monitor's loop does for one link: send on schedule, drain when the socket is
    readable, settle the rest as lost after `timeout_s`. Ends when every probe is settled.
    """
    run = Run(window or ProbeWindow(ProbeSettings(window=max(1, len(seqs)))))
    poller = select.poll()
    poller.register(prober.fileno(), select.POLLIN)
    start = time.monotonic()
    schedule = [(start + i * interval_s, seq) for i, seq in enumerate(seqs)]
    while True:
        now = time.monotonic()
        while schedule and schedule[0][0] <= now:
            seq = schedule.pop(0)[1]
            run.window.sent(seq, time.monotonic())
            run.sent_at[seq] = time.monotonic()
            run.sent.append(prober.send(seq))
        if not schedule and run.window.snapshot().pending == 0:
            return run
        wake = schedule[0][0] if schedule else max(run.sent_at.values()) + timeout_s
        if not schedule and now >= wake:
            run.window.timed_out(now, timeout_s)
            return run
        if poller.poll(max(0, math.ceil((wake - now) * 1000))):
            for seq in prober.drain():
                rtt = run.window.answered(seq, time.monotonic())
                if rtt is not None:
                    run.rtts[seq] = rtt


@pytest.fixture
def link(make_netns: Callable[[str], str]) -> Link:
    """A router namespace with one link to a peer namespace."""
    return build_link(make_netns("mr"), make_netns("peer"), "a", 4101, 1)


@pytest.fixture
def prober_cleanup() -> Iterator[list[Prober]]:
    """Probers appended here are closed at teardown."""
    made: list[Prober] = []
    yield made
    for prober in made:
        prober.close()


# --- ICMP against the peer's kernel -----------------------------------------------------


@pytest.mark.kernel
@pytest.mark.parametrize("version", [6, 4])
def test_icmp_echo_is_answered_by_the_peer_kernel(
    link: Link, prober_cleanup: list[Prober], version: int
) -> None:
    target = ProbeTarget(ProbeKind.ICMP, link.peer_ip(version), interface=link.router_dev)
    prober = open_in(link.router, target)
    prober_cleanup.append(prober)
    echos = "Icmp6InEchos" if version == 6 else "IcmpInEchos"
    before = counter(link.peer, echos) if version == 6 else 0

    run = run_probes(prober, list(range(5)))

    stats = run.window.snapshot()
    assert all(run.sent)
    assert (stats.answered, stats.loss) == (5, 0.0)
    assert stats.rtt_mean_ms is not None
    assert stats.rtt_mean_ms < 20  # a veth: well under a millisecond unless the VM stalls
    if version == 6:
        assert counter(link.peer, echos) - before == 5  # the peer saw exactly our probes


@pytest.mark.kernel
def test_icmp_to_a_link_local_target_needs_no_scope_id(
    link: Link, prober_cleanup: list[Prober]
) -> None:
    target = ProbeTarget(ProbeKind.ICMP, IPv6Address("fe80::2"), interface=link.router_dev)
    prober = open_in(link.router, target)
    prober_cleanup.append(prober)

    run = run_probes(prober, [1, 2, 3])

    assert run.window.snapshot().answered == 3


@pytest.mark.kernel
def test_icmp_loss_reaches_100_percent_when_the_peer_address_goes(
    link: Link, prober_cleanup: list[Prober]
) -> None:
    target = ProbeTarget(ProbeKind.ICMP, link.peer_ip(6), interface=link.router_dev)
    prober = open_in(link.router, target)
    prober_cleanup.append(prober)
    window = ProbeWindow(ProbeSettings(window=4))
    assert run_probes(prober, [0, 1, 2, 3], window=window).window.snapshot().loss == 0.0

    netns.run(link.peer, ["ip", "addr", "del", "fd00:1::2/64", "dev", link.peer_dev])
    stats = run_probes(prober, [4, 5, 6, 7], timeout_s=0.3, window=window).window.snapshot()

    assert (stats.answered, stats.lost, stats.loss) == (0, 4, 1.0)


# --- UDP through the responder ------------------------------------------------------------


@pytest.mark.kernel
@pytest.mark.parametrize("version", [6, 4])
def test_udp_probe_is_echoed_by_the_responder(
    link: Link, prober_cleanup: list[Prober], version: int
) -> None:
    responder = start_responder(link.peer, port=0)
    try:
        target = ProbeTarget(
            ProbeKind.UDP,
            link.peer_ip(version),
            port=responder.port,
            interface=link.router_dev,
            source=link.router_ip(version),
        )
        prober = open_in(link.router, target, ident=2**32 - 1)
        prober_cleanup.append(prober)
        run = run_probes(prober, [2**32 - 3, 2**32 - 2, 2**32 - 1])
    finally:
        responder.stop()

    assert run.window.snapshot().answered == 3
    assert responder.stats.answered == 3


@pytest.mark.kernel
def test_udp_loss_reaches_100_percent_when_the_responder_stops(
    link: Link, prober_cleanup: list[Prober]
) -> None:
    responder = start_responder(link.peer, port=0)
    target = ProbeTarget(ProbeKind.UDP, link.peer_ip(6), port=responder.port)
    prober = open_in(link.router, target)
    prober_cleanup.append(prober)
    window = ProbeWindow(ProbeSettings(window=4))
    try:
        assert run_probes(prober, [0, 1, 2, 3], window=window).window.snapshot().loss == 0.0
    finally:
        responder.stop()

    stats = run_probes(prober, [4, 5, 6, 7], timeout_s=0.3, window=window).window.snapshot()

    assert (stats.answered, stats.lost, stats.loss) == (0, 4, 1.0)


# --- a link that disappears ------------------------------------------------------------


@pytest.mark.kernel
@pytest.mark.parametrize("kind", [ProbeKind.ICMP, ProbeKind.UDP])
def test_send_on_a_deleted_interface_returns_false_and_recovers_when_it_returns(
    link: Link, prober_cleanup: list[Prober], kind: ProbeKind
) -> None:
    responder = start_responder(link.peer)
    target = ProbeTarget(kind, link.peer_ip(6), interface=link.router_dev)
    prober = open_in(link.router, target)
    prober_cleanup.append(prober)
    try:
        netns.run(link.router, ["ip", "link", "del", link.router_dev])  # both veth ends go

        assert prober.send(1) is False
        assert prober.send(2) is False
        assert prober.drain() == []

        # The same names again, with new ifindexes. The socket is still bound to the dead
        # index, so the first send fails; that failure makes it bind to the name anew.
        build_link(link.router, link.peer, "a", 4111, 1)
        run = run_probes(prober, [3, 4, 5, 6], timeout_s=0.5)
    finally:
        responder.stop()

    assert run.sent == [False, True, True, True]
    assert sorted(run.rtts) == [4, 5, 6]


# --- binding: the probe leaves by its own link only ---------------------------------------

SHARED_TARGET = IPv6Address("fd00:99::1")


@pytest.fixture
def two_links(make_netns: Callable[[str], str]) -> tuple[Link, Link]:
    """Two links from the router to two peers that both own SHARED_TARGET.

    The router's route to SHARED_TARGET prefers link A (lower metric): a probe bound to link B
    that still went out on B can only have been steered by the binding.
    """
    router = make_netns("mr")
    a = build_link(router, make_netns("pa"), "a", 4201, 1)
    b = build_link(router, make_netns("pb"), "b", 4203, 2)
    for link, metric in ((a, "100"), (b, "200")):
        add_address(link.peer, link.peer_dev, f"{SHARED_TARGET}/128")
        route = [f"{SHARED_TARGET}/128", "dev", link.router_dev, "metric", metric]
        netns.run(router, ["ip", "-6", "route", "add", *route])
    return a, b


@pytest.mark.kernel
@pytest.mark.parametrize("kind", [ProbeKind.ICMP, ProbeKind.UDP])
def test_prober_bound_to_a_link_sends_by_that_link_only(
    two_links: tuple[Link, Link], prober_cleanup: list[Prober], kind: ProbeKind
) -> None:
    a, b = two_links
    responders = [start_responder(link.peer) for link in (a, b)]
    count = 20
    try:
        prober = open_in(b.router, ProbeTarget(kind, SHARED_TARGET, interface=b.router_dev))
        prober_cleanup.append(prober)
        echos = [counter(link.peer, "Icmp6InEchos") for link in (a, b)]
        tx = [tx_packets(link.router, link.router_dev) for link in (a, b)]

        run = run_probes(prober, list(range(count)), interval_s=0.005)

        tx_a, tx_b = (
            tx_packets(x.router, x.router_dev) - n for x, n in zip((a, b), tx, strict=True)
        )
        seen = [counter(x.peer, "Icmp6InEchos") - n for x, n in zip((a, b), echos, strict=True)]
    finally:
        for responder in responders:
            responder.stop()

    assert run.window.snapshot().answered == count
    assert tx_b >= count
    assert tx_a < count  # at most some neighbour discovery / MLD, never the probes
    if kind == ProbeKind.ICMP:
        assert seen == [0, count]
    else:
        assert [r.stats.received for r in responders] == [0, count]


# --- foreign replies ------------------------------------------------------------------


@pytest.mark.kernel
def test_icmp_probers_in_one_namespace_take_only_their_own_replies(
    link: Link, prober_cleanup: list[Prober]
) -> None:
    target = ProbeTarget(ProbeKind.ICMP, link.peer_ip(6), interface=link.router_dev)
    mine = open_in(link.router, target)  # the same ident on purpose: only the token differs
    other = open_in(link.router, target)
    prober_cleanup.extend([mine, other])
    for seq in range(5):
        assert other.send(100 + seq)

    run = run_probes(mine, list(range(5)))
    deadline = time.monotonic() + 2
    others: list[int] = []
    while len(others) < 5 and time.monotonic() < deadline:
        select.select([other.fileno()], [], [], 0.05)
        others += other.drain()

    assert sorted(run.rtts) == list(range(5))
    assert run.window.snapshot().late == 0
    assert sorted(others) == [100, 101, 102, 103, 104]
    assert mine.drain() == []  # each reply reaches every raw socket: these are read by now
    assert mine.ignored == 5  # it read the other's replies and let them be
    assert other.ignored == 5


def _forge_echo_replies(destination: str) -> None:
    """From the peer: echo replies with our ident but a wrong token, and a truncated one."""
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as sock:
        forged = _reply(6, IDENT, 1, b"stranger")
        other_ident = _reply(6, IDENT + 1, 1, b"stranger")
        for packet in (forged, forged[:10], other_ident):
            sock.sendto(packet, (destination, 0))


@pytest.mark.kernel
def test_icmp_prober_ignores_forged_and_malformed_replies(
    link: Link, prober_cleanup: list[Prober]
) -> None:
    target = ProbeTarget(ProbeKind.ICMP, link.peer_ip(6), interface=link.router_dev)
    prober = open_in(link.router, target)
    prober_cleanup.append(prober)

    in_netns(link.peer, lambda: _forge_echo_replies(str(link.router_ip(6))))
    run = run_probes(prober, [1])  # its answer comes after the forgeries, on the same path

    assert sorted(run.rtts) == [1]
    assert prober.ignored == 3


class FakePeer:
    """A UDP socket in the peer namespace on the probe port, playing a hostile responder."""

    def __init__(self, link: Link, port: int = DEFAULT_PROBE_PORT) -> None:
        self.address = str(link.peer_ip(6))

        def make(bind_port: int) -> socket.socket:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            sock.bind((self.address, bind_port))
            sock.settimeout(2)
            return sock

        self.sock = in_netns(link.peer, lambda: make(port))
        self.other_port = in_netns(link.peer, lambda: make(0))

    def close(self) -> None:
        self.sock.close()
        self.other_port.close()


@pytest.mark.kernel
def test_udp_prober_ignores_garbage_forgeries_and_reflections(
    link: Link, prober_cleanup: list[Prober]
) -> None:
    peer = FakePeer(link)
    prober = open_in(link.router, ProbeTarget(ProbeKind.UDP, link.peer_ip(6)))
    prober_cleanup.append(prober)
    try:
        assert prober.send(42)
        request, sender = peer.sock.recvfrom(2048)
        probe = decode_udp_probe(request)
        assert probe is not None
        assert (probe.type, probe.ident, probe.seq) == (UdpProbeType.REQUEST, IDENT, 42)
        answer = answer_for(request)
        assert answer is not None
        wrong_token = encode_udp_probe(UdpProbe(UdpProbeType.REPLY, IDENT, 42, b"stranger"))
        wrong_ident = encode_udp_probe(UdpProbe(UdpProbeType.REPLY, IDENT + 1, 42, probe.token))
        for junk in (b"garbage", wrong_token, wrong_ident, request):  # request: a reflection
            peer.sock.sendto(junk, sender)
        peer.other_port.sendto(answer, sender)  # right bytes, wrong source port
        peer.sock.sendto(answer, sender)  # the one real answer, last

        seqs: list[int] = []
        deadline = time.monotonic() + 2
        while not seqs and time.monotonic() < deadline:
            select.select([prober.fileno()], [], [], 0.05)
            seqs += prober.drain()
    finally:
        peer.close()

    assert seqs == [42]
    assert prober.ignored == 5


# --- opening errors -------------------------------------------------------------------


@pytest.mark.kernel
def test_open_prober_on_an_unknown_interface_names_it(link: Link) -> None:
    target = ProbeTarget(ProbeKind.ICMP, link.peer_ip(6), interface="nosuch0")
    with pytest.raises(KernelError, match="nosuch0") as caught:
        open_in(link.router, target)
    assert caught.value.errno == 19  # ENODEV
    assert "no such interface" in str(caught.value)


@pytest.mark.kernel
def test_open_prober_from_an_address_not_configured_names_it(link: Link) -> None:
    target = ProbeTarget(ProbeKind.UDP, link.peer_ip(6), source=IPv6Address("fd00:1::77"))
    with pytest.raises(KernelError, match="fd00:1::77") as caught:
        open_in(link.router, target)
    assert caught.value.errno == 99  # EADDRNOTAVAIL


def test_probe_bytes_per_hour_counts_both_directions_from_the_ip_header() -> None:
    from services.monitor.probe import probe_bytes_per_hour

    # ICMPv6 echo: 40 + 8 + 12 bytes each way, 10 a second: 3600 * 10 * 2 * 60.
    assert probe_bytes_per_hour("icmp", 6, 0.1) == pytest.approx(4_320_000)
    assert probe_bytes_per_hour("udp", 4, 10.0) == pytest.approx(2 * (20 + 8 + 24) * 360)
