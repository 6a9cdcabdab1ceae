"""MhCapture against a real kernel: both directions seen, addresses right, garbage counted.

The capture runs in the HA namespace (started from a thread that entered it, so the test
process stays where it is); the lab's raw sockets send real signalling over the veth.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from ipaddress import IPv6Address

import pytest

from labs.mobility_events import COA1, HA_ADDRESS, MobilityLab, Signaller, raw_socket_in
from services import netns
from services.mobility_events.capture import MhCapture
from services.mobility_header import DECODE_STATS, BindingAcknowledgement, BindingUpdate
from services.mobility_header.codec import Message

pytestmark = pytest.mark.kernel
Seen = tuple[float, IPv6Address, IPv6Address, Message]


def start_in(name: str, capture: MhCapture) -> None:
    failed: list[BaseException] = []

    def start() -> None:
        try:
            netns.enter(name)
            capture.start()
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]


def wait_for(seen: list[Seen], count: int, deadline_s: float = 3.0) -> None:
    deadline = time.monotonic() + deadline_s
    while len(seen) < count and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.fixture
def lab(make_netns: object) -> Iterator[MobilityLab]:
    lab = MobilityLab()
    lab.build()
    try:
        yield lab
    finally:
        lab.destroy()


@pytest.mark.parametrize("outgoing", [True, False])
def test_sees_incoming_bu_and_outgoing_ba(lab: MobilityLab, outgoing: bool) -> None:
    seen: list[Seen] = []
    capture = MhCapture(lambda *args: seen.append(args), outgoing=outgoing)
    start_in(lab.ha, capture)
    send = Signaller(lab)
    try:
        before = time.time()
        send.send_bu(COA1, 7, 10, 1)
        send.send_ba(COA1, 7, 10)
        wait_for(seen, 2 if outgoing else 1)
        time.sleep(0.1)  # anything more would show up now
    finally:
        send.close()
        capture.stop()
    assert not capture.alive
    kinds = [(type(m), src, dst) for _now, src, dst, m in seen]
    expected: list[tuple[type[Message], IPv6Address, IPv6Address]] = [
        (BindingUpdate, COA1, HA_ADDRESS)
    ]
    if outgoing:
        expected.append((BindingAcknowledgement, HA_ADDRESS, COA1))
    assert kinds == expected
    assert all(before <= now <= time.time() for now, *_ in seen)
    assert seen[0][3].sequence == 7  # type: ignore[union-attr]


def test_malformed_headers_are_counted_not_raised(lab: MobilityLab) -> None:
    seen: list[Seen] = []
    capture = MhCapture(lambda *args: seen.append(args), outgoing=True)
    start_in(lab.ha, capture)
    sock = raw_socket_in(lab.mr, COA1)
    send = Signaller(lab)
    failed_before = DECODE_STATS.failed
    try:
        # An unsupported MH type (1, HoTI) and a header length promising more than was sent.
        sock.sendto(bytes([59, 1, 1, 0, 0, 0]) + bytes(10), (str(HA_ADDRESS), 0))
        sock.sendto(bytes([59, 3, 5, 0, 0, 0]) + bytes(10), (str(HA_ADDRESS), 0))
        send.send_bu(COA1, 8, 10, 1)
        wait_for(seen, 1)
        deadline = time.monotonic() + 2
        while capture.stats.malformed < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        sock.close()
        send.close()
        capture.stop()
    assert capture.stats.malformed == 2
    assert DECODE_STATS.failed - failed_before >= 2
    assert [type(m) for *_, m in seen] == [BindingUpdate]


def test_stop_is_prompt_and_idempotent(lab: MobilityLab) -> None:
    capture = MhCapture(lambda *args: None, outgoing=True)
    start_in(lab.ha, capture)
    began = time.monotonic()
    capture.stop()
    capture.stop()
    assert time.monotonic() - began < 0.5
    assert not capture.alive


def test_callback_error_ends_the_thread_and_is_reported(lab: MobilityLab) -> None:
    errors: list[BaseException] = []

    def explode(*_args: object) -> None:
        raise RuntimeError("boom")

    capture = MhCapture(explode, on_error=errors.append)
    start_in(lab.ha, capture)
    send = Signaller(lab)
    try:
        send.send_bu(COA1, 9, 10, 1)
        deadline = time.monotonic() + 3
        while capture.alive and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        send.close()
        capture.stop()
    assert [str(e) for e in errors] == ["boom"]
    assert not capture.alive
