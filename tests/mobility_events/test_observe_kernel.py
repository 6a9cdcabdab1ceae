"""The real service, its own process, capturing real BU/BA signalling between two namespaces.

The MR namespace sends BUs through raw protocol-135 sockets, the HA namespace answers with BAs;
the service captures in the HA namespace (raw socket for the BUs it receives, packet tap for
the BAs it sends) and the events are read back from the real broker on a unique topic root.
"""

from __future__ import annotations

import queue
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from labs.mobility_events import (
    COA1,
    COA2,
    HA_NODE,
    MR_ID,
    Arrival,
    EventListener,
    MobilityLab,
    Signaller,
    service_process,
    write_config,
)
from services.contracts.messages import BindingEventKind
from services.contracts.settings import BrokerSettings

pytestmark = [pytest.mark.kernel, pytest.mark.broker]
K = BindingEventKind


@dataclass
class Running:
    lab: MobilityLab
    send: Signaller
    listen: EventListener
    log: Path

    def expect(self, kind: K, bid: int, timeout_s: float = 5.0) -> Arrival:
        try:
            arrival = self.listen.next(timeout_s)
        except queue.Empty:
            pytest.fail(f"no {kind} event within {timeout_s} s\n{self.log.read_text()[-3000:]}")
        assert (arrival.event.event, arrival.event.bid) == (kind, bid), arrival.event
        assert arrival.event.mobile_router == MR_ID
        assert arrival.topic.endswith(f"/mr/{MR_ID}/binding/{bid}")
        return arrival

    def nothing_more(self, within_s: float = 0.3) -> None:
        with pytest.raises(queue.Empty):
            self.listen.next(within_s)


@pytest.fixture
def running(
    make_netns: object, broker: tuple[str, int], topic_root: str, tmp_path: Path
) -> Iterator[Running]:
    # make_netns is requested for its root/iproute2 checks; the lab names its own namespaces.
    lab = MobilityLab()
    lab.build()
    settings = BrokerSettings(host=broker[0], port=broker[1], topic_root=topic_root)
    listen = EventListener(settings)
    send = Signaller(lab)
    log = tmp_path / "service.log"
    try:
        with service_process(write_config(tmp_path, topic_root), lab.ha, log):
            try:
                listen.wait_online(HA_NODE)
            except TimeoutError:
                pytest.fail(log.read_text())
            yield Running(lab, send, listen, log)
    finally:
        send.close()
        listen.close()
        lab.destroy()


def test_every_event_kind_from_real_signalling(running: Running) -> None:
    r = running
    r.send.send_bu(COA1, 1, 10, 1)
    r.send.send_ba(COA1, 1, 10)
    event = r.expect(K.REGISTERED, 1).event
    assert (event.care_of_address, event.lifetime_s, event.sender) == (str(COA1), 40, HA_NODE)

    r.send.send_bu(COA1, 2, 10, 1)
    r.send.send_ba(COA1, 2, 10)
    r.expect(K.REFRESHED, 1)

    r.send.send_bu(COA2, 3, 10, 1)
    started = r.expect(K.HANDOVER_STARTED, 1).event
    assert (started.care_of_address, started.previous_care_of_address) == (str(COA2), str(COA1))
    r.send.send_ba(COA2, 3, 10)
    moved = r.expect(K.COA_CHANGED, 1).event
    assert (moved.care_of_address, moved.previous_care_of_address) == (str(COA2), str(COA1))

    r.send.send_bu(COA2, 4, 0, 1)
    r.expect(K.HANDOVER_STARTED, 1)
    r.send.send_ba(COA2, 4, 0)
    gone = r.expect(K.DEREGISTERED, 1).event
    assert gone.care_of_address == str(COA2)

    r.send.send_bu(COA1, 5, 10, 2)
    r.send.send_ba(COA1, 5, 0, status=142)
    refused = r.expect(K.REJECTED, 2).event
    assert (refused.status, refused.status_name) == (142, "Not Authorized for Prefix")

    # A BA nobody asked for, and a BU of a router we do not know: no events.
    r.send.send_ba(COA1, 99, 10)
    r.send.send_bu(COA1, 6, 10, 3, mnp=False)
    r.send.send_ba(COA1, 6, 10)
    r.nothing_more()


def test_expiry_of_a_short_lifetime(running: Running) -> None:
    r = running
    r.send.send_bu(COA1, 1, 1, 3)  # 1 unit = 4 s
    r.send.send_ba(COA1, 1, 1)
    registered = r.expect(K.REGISTERED, 3)
    expired = r.expect(K.EXPIRED, 3, timeout_s=8)
    waited = expired.at - registered.at
    assert 4.0 <= waited < 4.0 + 0.2 + 1.0, waited  # lifetime + one tick + slack


def test_latency_from_ba_to_broker(running: Running) -> None:
    r = running
    r.send.send_bu(COA1, 1, 100, 1)
    r.send.send_ba(COA1, 1, 100)
    r.expect(K.REGISTERED, 1)
    latencies = []
    for sequence in range(2, 52):
        r.send.send_bu(COA1, sequence, 100, 1)
        sent = r.send.send_ba(COA1, sequence, 100)
        latencies.append(r.expect(K.REFRESHED, 1).at - sent)
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(0.99 * (len(latencies) - 1))] * 1000
    print(f"BA -> broker event latency over {len(latencies)}: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    assert p99 < 100, latencies  # the target is 20 ms; the bench reports it
