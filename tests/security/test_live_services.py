"""Representative samples of generated inputs against running services on the real broker: the
NSA (in process, as `multinet nsa run` builds it) fed damaged JSON on every input topic, and a
mobility_events process capturing in a namespace fed damaged and random Mobility Headers from
the mobile router's namespace. The thousands of inputs run in process elsewhere
(`test_*_properties.py`); here a sample proves the running service answers them the same way:
it stays up, sets nothing aside, and still does its job on the next valid input.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labs.mobility_events import (
    COA1,
    HA_ADDRESS,
    HA_NODE,
    MNP,
    MR_ID,
    EventListener,
    MobilityLab,
    Signaller,
    raw_socket_in,
    service_process,
)
from services.contracts.messages import BindingEventKind, LinkState
from services.contracts.settings import BrokerSettings
from services.contracts.topics import Topics
from services.nsa.service import NsaService
from services.nsa.settings import load_file
from services.ports import free_port
from tests.conftest import _require
from tests.nsa.busbed import BusDriver, wait_until, write_settings
from tests.observability.scrape import scrape
from tests.security.strategies import INPUT_KINDS, bus_payloads, packets

SAMPLE = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- the NSA ---------------------------------------------------------------------------------

MR, MR_NODE = "mr1", "mr1"


@dataclass
class LiveNsa:
    service: NsaService
    driver: BusDriver
    topics: Topics


@pytest.fixture(scope="module")
def live_nsa(
    broker: tuple[str, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveNsa]:
    root = f"test-{uuid.uuid4().hex[:10]}/multinet/v1"
    settings_ = BrokerSettings(host=broker[0], port=broker[1], topic_root=root)
    routers = [{"id": MR, "ha_node": "ha1", "mr_node": MR_NODE}]
    config = write_settings(
        tmp_path_factory.mktemp("nsa") / "nsa.yaml",
        settings_,
        routers,
        nsa={"decision": {"dwell_s": 0.0, "margin": 0.05}},
    )
    service = NsaService(config, load_file(config))
    service.start()
    driver = BusDriver(settings_)
    try:
        # The metrics connection (its own process, QoS 0, no session) subscribes on its own
        # time: report until a report got through.
        def reported() -> bool:
            driver.metrics(MR_NODE, 1, rtt_ms=20.0)
            return service.engine.stats.inputs["metrics"] > 0

        wait_until(reported, "the metrics connection")
        yield LiveNsa(service, driver, Topics(root))
    finally:
        driver.close()
        service.stop()
    assert service.error is None


def _nsa_topic(topics: Topics, kind: str) -> str:
    return {
        "metrics": topics.link_metrics(MR_NODE, "if1"),
        "node-metrics": topics.node_metrics(MR_NODE),
        "link-state": topics.link_state(MR_NODE, "if1"),
        "binding-event": topics.binding_event(MR, 1),
        "status": topics.status("ha1"),
        "presence": topics.presence("ha1", "prem"),
        "preferences": topics.preferences(MR),
        "operator-rules": topics.operator_rules(),
    }[kind]


@st.composite
def nsa_input(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(INPUT_KINDS))
    payload = bus_payloads(kind, sender=MR_NODE, mobile_router=MR, timestamp=time.time())
    return kind, draw(payload)


@pytest.mark.broker
@SAMPLE
@given(nsa_input())
def test_a_running_nsa_answers_a_sample_of_generated_inputs(
    live_nsa: LiveNsa, received: tuple[str, bytes]
) -> None:
    kind, payload = received
    stats = live_nsa.service.engine.stats
    taken = stats.inputs[kind]
    live_nsa.driver.publish(_nsa_topic(live_nsa.topics, kind), payload)
    wait_until(lambda: stats.inputs[kind] > taken, f"the {kind} input taken")
    assert live_nsa.service.running
    assert live_nsa.service.dead_letters.sent == 0


@pytest.mark.broker
def test_the_running_nsa_still_decides_after_the_sample(live_nsa: LiveNsa) -> None:
    nsa, driver, topics = live_nsa.service, live_nsa.driver, live_nsa.topics
    # Back to the settings file's preferences and rules, both links up (the sample may have
    # set valid ones of its own).
    driver.publish(topics.preferences(MR), b"")
    driver.publish(topics.operator_rules(), b"")
    for bid in (1, 2):
        up = LinkState(sender=MR_NODE, interface=f"if{bid}", bid=bid, up=True, carrier=True)
        driver.publish(topics.link_state(MR_NODE, f"if{bid}"), up)
    driver.start_ticking()
    driver.metrics(MR_NODE, 1, rtt_ms=20.0)
    driver.metrics(MR_NODE, 2, rtt_ms=60.0)
    for bid in (1, 2):
        driver.binding(MR, bid, BindingEventKind.REGISTERED)
    wait_until(lambda: driver.class_bid(MR) == 1, "a decision for BID 1")
    driver.metrics(MR_NODE, 1, rtt_ms=200.0)
    wait_until(lambda: driver.class_bid(MR) == 2, "the flow moved to BID 2")
    assert nsa.running
    assert nsa.dead_letters.sent == 0


# --- mobility_events -------------------------------------------------------------------------


@dataclass
class LiveMobility:
    lab: MobilityLab
    listen: EventListener
    sender: socket.socket
    proc: subprocess.Popen[bytes]
    metrics_port: int
    log: Path


@pytest.fixture(scope="module")
def live_mobility(
    broker: tuple[str, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveMobility]:
    _require(os.geteuid() == 0, "needs root for network namespaces")
    root = f"test-{uuid.uuid4().hex[:10]}/multinet/v1"
    workdir = tmp_path_factory.mktemp("mobility")
    port = free_port()
    config = workdir / "mobility.toml"
    config.write_text(
        "[mobility_events]\n"
        f'node = "{HA_NODE}"\ntick_interval_s = 0.2\n'
        f'metrics_listen = "127.0.0.1:{port}"\n'
        f'mobile_routers = [{{ id = "{MR_ID}", prefixes = ["{MNP}"] }}]\n'
        f'[broker]\ntopic_root = "{root}"\nport = {broker[1]}\nsession_expiry_s = 60\n',
        encoding="utf-8",
    )
    lab = MobilityLab()
    lab.build()
    listen = EventListener(BrokerSettings(host=broker[0], port=broker[1], topic_root=root))
    sender = raw_socket_in(lab.mr, COA1)
    log = workdir / "service.log"
    try:
        with service_process(config, lab.ha, log) as proc:
            listen.wait_online(HA_NODE)
            yield LiveMobility(lab, listen, sender, proc, port, log)
    finally:
        sender.close()
        listen.close()
        lab.destroy()


@pytest.mark.kernel
@pytest.mark.broker
@SAMPLE
@given(st.lists(packets(), min_size=1, max_size=5))
def test_a_running_mobility_events_survives_a_sample_of_generated_packets(
    live_mobility: LiveMobility, sent: list[bytes]
) -> None:
    for data in sent:
        try:
            live_mobility.sender.sendto(data, (str(HA_ADDRESS), 0))
        except OSError:
            continue  # too short for the kernel to fill in the checksum: it never leaves
    assert live_mobility.proc.poll() is None, live_mobility.log.read_text()[-3000:]


@pytest.mark.kernel
@pytest.mark.broker
def test_the_running_mobility_events_still_reports_bindings(live_mobility: LiveMobility) -> None:
    signal = Signaller(live_mobility.lab)
    try:
        signal.send_bu(COA1, 40000, 10, 7)
        signal.send_ba(COA1, 40000, 10)
        arrival = live_mobility.listen.wait_for(BindingEventKind.REGISTERED, 7, timeout_s=10)
    finally:
        signal.close()
    assert arrival.event.care_of_address == str(COA1)
    samples = scrape(live_mobility.metrics_port).values
    total = {name: 0.0 for name, _ in samples}
    for (name, _), value in samples.items():
        total[name] += value
    assert total["multinet_mobility_events_decode_errors_total"] > 0, "the sample was decoded"
    assert total.get("multinet_dead_letters_total", 0.0) == 0
