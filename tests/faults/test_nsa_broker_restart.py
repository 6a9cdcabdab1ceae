"""The broker restarts mid-run under a deciding NSA: it reconnects, hears new inputs, decides
and enforces them, resynchronises a worker that came back with nothing, and delivers a
decision it took while the broker was away.

The chain of tests/nsa/test_gateway_e2e.py (`chainbed`: the real SOAP gateway, two PREM worker
processes on the memory back end in namespaces, the bus driver playing the monitor and
mobility_events) runs on a broker of the test's own (`OwnBroker`: persistence on, restarted on
the same port). The NSA runs in-process (the `NsaService` that `multinet nsa run` builds), so
the test can read its connection, its reconnect delay and its ledgers: what it believes each
node holds. What the workers hold is read from their state files.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services import bus
from services.contracts.messages import BindingEventKind, LinkState
from services.contracts.policy import Direction
from services.contracts.settings import BrokerSettings
from services.nsa.core import Reason
from services.nsa.core.plan import NodeLedger, desired_policies
from services.nsa.service import NsaService
from services.nsa.settings import load_file
from tests.faults.broker import OwnBroker
from tests.nsa.busbed import wait_until, write_settings
from tests.nsa.chainbed import HA_NODE, MR, MR_NODE, ROUTERS, Chain, running_chain

pytestmark = [pytest.mark.kernel, pytest.mark.broker]
#: Each reconnect waits at most 1, 2, 4 s ... (jittered); the outage here is a few seconds.
RECONNECT_S = 20.0
DWELL_S = 3.0


@pytest.fixture
def chain(
    own_broker: OwnBroker, topic_root: str, tmp_path: Path, make_netns: Callable[[str], str]
) -> Iterator[Chain]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    settings = BrokerSettings(host="127.0.0.1", port=own_broker.port, topic_root=topic_root)
    with running_chain(settings, tmp_path, make_netns) as bed:
        yield bed


@pytest.fixture
def nsa(chain: Chain, tmp_path: Path) -> Iterator[NsaService]:
    config = write_settings(
        tmp_path / "nsa.yaml",
        chain.driver.broker,
        ROUTERS,
        # A dwell time long enough to stop the broker while a challenger waits it out.
        nsa={"gateway": chain.soap_link(), "decision": {"dwell_s": DWELL_S, "margin": 0.1}},
    )
    service = NsaService(config, load_file(config))
    service.start()
    try:
        yield service
    finally:
        service.stop()
    assert service.error is None


def _ledger(nsa: NsaService, node: str) -> NodeLedger:
    ledgers = nsa.engine.slots[MR].ledgers
    ledger = ledgers.ha if node == HA_NODE else ledgers.mr
    assert ledger is not None
    return ledger


def _agreed(chain: Chain, nsa: NsaService) -> Callable[[], bool]:
    """Nothing in flight or owed, and each worker holds exactly the version and set the NSA
    believes it holds, which is the set its current assignment wants."""

    def check() -> bool:
        slot = nsa.engine.slots[MR]
        if slot.call is not None or slot.dirty:
            return False
        config = nsa.engine.store.config_for(MR)
        for node, direction in ((HA_NODE, Direction.DOWNLINK), (MR_NODE, Direction.UPLINK)):
            ledger, held = _ledger(nsa, node), chain.held(node)
            if held is None or ledger.in_flight is not None or ledger.needs_resync:
                return False
            believed = {p.id: p for p in ledger.policies}
            if (held.version, held.by_id()) != (ledger.version, believed):
                return False
            if believed != {p.id: p for p in desired_policies(config, slot.state, direction)}:
                return False
        return True

    return check


def _armed_delay(client: object) -> float:
    """The wait paho will take before its next reconnect attempt (set by JitteredBackoff)."""
    return float(client._reconnect_min_delay)  # type: ignore[attr-defined]


def _steady(chain: Chain, nsa: NsaService) -> None:
    """Both links up, measured and bound; video on BID 1 (the faster) at both workers."""
    driver = chain.driver
    driver.metrics(MR_NODE, 1, rtt_ms=20.0)
    driver.metrics(MR_NODE, 2, rtt_ms=60.0)
    for bid in (1, 2):
        driver.publish(
            driver.topics.link_state(MR_NODE, f"if{bid}"),
            LinkState(sender=MR_NODE, interface=f"if{bid}", bid=bid, up=True, carrier=True),
            retain=True,
        )
        driver.binding(MR, bid, BindingEventKind.REGISTERED)
    wait_until(chain.both_on(1), "video on BID 1 at both workers\n" + chain.logs(), 30)
    wait_until(_agreed(chain, nsa), "the NSA and the workers agree before the restart")


def test_the_nsa_reconnects_decides_and_resyncs_after_a_broker_restart(
    own_broker: OwnBroker, chain: Chain, nsa: NsaService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="services.nsa")
    driver, client = chain.driver, nsa.client
    assert isinstance(client, bus.BusClient)
    _steady(chain, nsa)
    before = _ledger(nsa, MR_NODE).version
    caplog.clear()  # the workers' first hellos (version 0) are in it

    # The broker goes away. The NSA's client arms a jittered, growing reconnect delay.
    own_broker.stop()
    wait_until(lambda: not client.is_connected(), "the NSA sees the broker gone")
    wait_until(lambda: client.backoff.attempt >= 2, "a failed reconnect attempt", RECONNECT_S)
    # The delay armed after the k-th wait lies in the upper half of the k-th step.
    step = bus.RECONNECT_MIN_S * 2 ** (client.backoff.attempt - 1)
    assert step / 2 <= _armed_delay(client) < step
    # Meanwhile the MR's worker restarts with its state lost (a new container, say): it
    # cannot reach the broker to say so until the broker is back.
    chain.stop_worker(MR_NODE, lose_state=True)
    chain.start_worker(MR_NODE)

    own_broker.start()
    back = time.monotonic()
    wait_until(client.is_connected, "the NSA reconnected", RECONNECT_S)
    print(f"the NSA reconnected {time.monotonic() - back:.1f} s after the broker returned")
    # paho reports the connection before its thread has run our CONNACK handler.
    wait_until(lambda: client.backoff.attempt == 0, "a CONNACK resets the backoff", 2.0)
    wait_until(chain.gateway.link.connected, "the gateway reconnected", RECONNECT_S)
    wait_until(driver.client.is_connected, "the test's monitor reconnected", RECONNECT_S)

    # The restarted worker says hello at version 0: the NSA installs the whole set again.
    wait_until(chain.both_on(1), "the restarted MR worker holding video on BID 1\n" + chain.logs())
    wait_until(_agreed(chain, nsa), "agreement after the resync\n" + chain.logs())
    assert _ledger(nsa, MR_NODE).version > before
    assert "node mr1 says hello at version 0, not the one it was known to hold" in caplog.text

    # New metrics reach the NSA again (its metrics connection came back too): BID 1 degrades
    # and, after the dwell time, both workers move video to BID 2.
    driver.metrics(MR_NODE, 1, rtt_ms=250.0)
    wait_until(chain.both_on(2), "video on BID 2 after the metrics change\n" + chain.logs())
    wait_until(_agreed(chain, nsa), "agreement after the metrics change")

    # A link state change (main connection, resubscribed): BID 2 goes down, video leaves it.
    driver.publish(
        driver.topics.link_state(MR_NODE, "if2"),
        LinkState(sender=MR_NODE, interface="if2", bid=2, up=False, carrier=False),
        retain=True,
    )
    wait_until(chain.both_on(1), "video back on BID 1 with BID 2 down\n" + chain.logs())
    wait_until(_agreed(chain, nsa), "agreement after the link state change")
    assert nsa.running
    assert all(proc.poll() is None for proc in chain.workers.values()), chain.logs()


def test_a_decision_taken_while_the_broker_is_down_is_enforced_once_it_is_back(
    own_broker: OwnBroker, chain: Chain, nsa: NsaService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="services.nsa")
    driver = chain.driver
    _steady(chain, nsa)

    # BID 1 degrades: BID 2 must wait out the dwell time, and the broker goes away meanwhile.
    driver.metrics(MR_NODE, 1, rtt_ms=250.0)

    def pending() -> bool:
        latest = driver.latest(MR)
        return latest is not None and (
            latest.explanation.for_class("video").reason is Reason.CHALLENGER_PENDING
        )

    wait_until(pending, "BID 2 waiting out the dwell time")
    failed = nsa.engine.stats.failed_calls
    caplog.clear()
    own_broker.stop()
    # The dwell time runs out during the outage: the NSA decides, and its call fails at once
    # (the gateway has no bus); it retries with backoff.
    wait_until(lambda: nsa.engine.stats.failed_calls > failed, "a call during the outage", 10)
    assert "Server.BusUnavailable" in caplog.text
    assert (chain.bid(HA_NODE), chain.bid(MR_NODE)) == (1, 1), "nothing reached the workers"

    own_broker.start()
    wait_until(chain.both_on(2), "the decision enforced after the restart\n" + chain.logs())
    wait_until(_agreed(chain, nsa), "agreement after the restart\n" + chain.logs())
    assert all(proc.poll() is None for proc in chain.workers.values()), chain.logs()
