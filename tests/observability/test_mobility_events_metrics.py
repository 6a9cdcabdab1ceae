"""mobility_events (its own process, real BU/BA signalling between namespaces) exports what it saw.

Events are counted by kind; a Mobility Header the codec refuses is counted by its reason and
the service keeps running. Its log lines are JSON records with the node id.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from ipaddress import IPv6Address
from pathlib import Path

import pytest

from labs.mobility_events import (
    COA1,
    HA_ADDRESS,
    HA_NODE,
    EventListener,
    MobilityLab,
    Signaller,
    raw_socket_in,
    write_config,
)
from services.contracts.messages import BindingEventKind
from services.contracts.settings import BrokerSettings
from services.ports import free_port
from tests.faults.procs import Service
from tests.observability.scrape import wait_scrape

pytestmark = [pytest.mark.kernel, pytest.mark.broker]
EVENTS = "multinet_mobility_events_published_total"
ERRORS = "multinet_mobility_events_decode_errors_total"
#: A Binding Refresh Request (MH type 0): well-formed for the kernel, not a type we decode.
BRR = bytes([59, 0, 0, 0, 0, 0, 0, 0])


@pytest.fixture
def lab(make_netns: object) -> Iterator[MobilityLab]:
    # make_netns only asserts root and iproute2 (CI turns their absence into a failure).
    built = MobilityLab()
    built.build()
    try:
        yield built
    finally:
        built.destroy()


def _send_raw(lab: MobilityLab, source: IPv6Address, payload: bytes) -> None:
    sock = raw_socket_in(lab.mr, source)
    try:
        sock.sendto(payload, (str(HA_ADDRESS), 0))
    finally:
        sock.close()


def test_events_by_kind_and_decode_errors_by_reason(
    lab: MobilityLab, broker: tuple[str, int], topic_root: str, tmp_path: Path
) -> None:
    port = free_port()
    config = write_config(tmp_path, topic_root)
    config.write_text(
        config.read_text().replace(
            "[mobility_events]\n", f'[mobility_events]\nmetrics_listen = "127.0.0.1:{port}"\n'
        )
    )
    argv = [sys.executable, "-m", "services.cli", "mobility-events", "--config", str(config)]
    service = Service([*argv, "--netns", lab.ha, "--log-json"], tmp_path / "service.log")
    listener = EventListener(BrokerSettings(host=broker[0], port=broker[1], topic_root=topic_root))
    signaller = Signaller(lab)
    service.start()
    try:
        listener.wait_online(HA_NODE)
        start = wait_scrape(port, lambda s: s.get("multinet_broker_connected") == 1)
        assert start.labelled(EVENTS, event="registered") == 0
        assert start.labelled(ERRORS, reason="unsupported_type") == 0

        signaller.send_bu(COA1, 1, 10, 1)
        signaller.send_ba(COA1, 1, 10)
        listener.wait_for(BindingEventKind.REGISTERED, 1)
        _send_raw(lab, COA1, BRR)
        samples = wait_scrape(port, lambda s: s.get(ERRORS, reason="unsupported_type") == 1)
        assert samples.labelled(EVENTS, event="registered") == 1
        assert samples.labelled(EVENTS, event="refreshed") == 0

        signaller.send_bu(COA1, 2, 10, 1)
        signaller.send_ba(COA1, 2, 10)
        listener.wait_for(BindingEventKind.REFRESHED, 1)
        assert wait_scrape(port, lambda s: s.get(EVENTS, event="refreshed") == 1)
        assert service.alive()
    finally:
        signaller.close()
        listener.close()
        assert service.stop() == 0, service.text()[-3000:]
    records = service.records()
    assert records
    assert {record["node"] for record in records} == {HA_NODE}
