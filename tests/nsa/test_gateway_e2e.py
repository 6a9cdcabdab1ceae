"""The whole chain on the real broker: metrics as a monitor publishes them -> `multinet nsa
run` decides -> its zeep client calls the real SOAP gateway (HTTP Basic) -> two real PREM
workers (memory back end, each in a network namespace of its own) apply.

What the workers hold is read from their own state files (what they acknowledged and would
enforce), not from the NSA (`chainbed`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.contracts import policy_xml
from services.contracts.messages import BindingEventKind
from services.contracts.policy import Duplicate, Forward
from services.contracts.settings import BrokerSettings
from services.nsa.core import Reason
from tests.nsa.busbed import VIDEO, nsa_process, wait_until, watched_nsa, write_settings
from tests.nsa.chainbed import HA_NODE, MR, MR_NODE, ROUTERS, Chain, running_chain

pytestmark = [pytest.mark.kernel, pytest.mark.broker]


@pytest.fixture
def chain(
    broker: tuple[str, int],
    topic_root: str,
    tmp_path: Path,
    make_netns: Callable[[str], str],
) -> Iterator[Chain]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    settings = BrokerSettings(host=broker[0], port=broker[1], topic_root=topic_root)
    with running_chain(settings, tmp_path, make_netns) as bed:
        yield bed


def test_metrics_to_decision_to_gateway_to_both_workers(chain: Chain, tmp_path: Path) -> None:
    driver = chain.driver
    config = write_settings(
        tmp_path / "nsa.yaml", driver.broker, ROUTERS, nsa={"gateway": chain.soap_link()}
    )
    with nsa_process(config, tmp_path / "nsa.log") as nsa:
        # 1. A monitor reports both links, mobility events both bindings: video on BID 1.
        driver.metrics(MR_NODE, 1, rtt_ms=20.0)
        driver.metrics(MR_NODE, 2, rtt_ms=60.0)
        for bid in (1, 2):
            driver.binding(MR, bid, BindingEventKind.REGISTERED)
        wait_until(
            chain.both_on(1),
            "video on BID 1 at both workers\n" + chain.logs(),
            30,
            watch=watched_nsa(nsa, tmp_path / "nsa.log"),
        )

        # 2. BID 1 degrades: after the dwell time both workers move video to BID 2.
        driver.metrics(MR_NODE, 1, rtt_ms=250.0)
        wait_until(chain.both_on(2), "video on BID 2 after the dwell\n" + chain.logs(), 20)
        moved = driver.latest(MR)
        assert moved is not None
        assert moved.explanation.for_class("video").reason is Reason.DWELL_ELAPSED

        # 3. BID 2 starts a handover: video leaves it at once; registered brings it back.
        driver.metrics(MR_NODE, 1, rtt_ms=20.0)
        driver.binding(MR, 2, BindingEventKind.HANDOVER_STARTED)
        wait_until(chain.both_on(1), "video off BID 2 during its handover", 10)
        record = driver.latest(MR)
        assert record is not None
        assert record.explanation.for_class("video").reason is Reason.HANDOVER_STARTED
        driver.metrics(MR_NODE, 1, rtt_ms=250.0)
        driver.binding(MR, 2, BindingEventKind.REGISTERED)
        wait_until(chain.both_on(2), "video back on BID 2 once registered", 10)
        back = [
            d.explanation.for_class("video").reason
            for d in driver.decisions
            if d.explanation.for_class("video").chosen_bid == 2
        ]
        assert Reason.HANDOVER_COMPLETED in back

        # 4. The MR's worker restarts with nothing (state lost): its hello gets a full
        #    Install, and both workers converge on the NSA's assignment again.
        before = len(driver.documents)
        chain.stop_worker(MR_NODE, lose_state=True)
        chain.start_worker(MR_NODE)
        wait_until(chain.both_on(2), "the restarted worker holding video on BID 2 again", 20)
        later = [policy_xml.parse(doc) for node, doc in driver.documents[before:]]
        assert any(m.node == MR_NODE and m.operation.kind == "install" for m in later), (
            "a full Install for the restarted worker"
        )
        assert nsa.poll() is None, chain.logs()
    log = (tmp_path / "nsa.log").read_text()
    assert "says hello at version 0" in log
    assert log.count("full Install next") <= 4, "announcements of applied versions are no hellos"
    assert "decision mr1 trigger" in log


def test_a_protected_class_goes_out_as_a_duplicate_to_both_workers(
    chain: Chain, tmp_path: Path
) -> None:
    driver = chain.driver
    video = {
        **VIDEO,
        "requirements": {"max_delay_ms": 100},
        "protect": "when-at-risk",
        "protect_hold_s": 1.0,
    }
    config = write_settings(
        tmp_path / "nsa.yaml",
        driver.broker,
        ROUTERS,
        nsa={"gateway": chain.soap_link(), "profiles": [video]},
    )
    with nsa_process(config, tmp_path / "nsa.log") as nsa:
        driver.metrics(MR_NODE, 1, rtt_ms=20.0)
        driver.metrics(MR_NODE, 2, rtt_ms=90.0)  # worse than BID 1 throughout: no move
        for bid in (1, 2):
            driver.binding(MR, bid, BindingEventKind.REGISTERED)
        wait_until(
            chain.both_on(1),
            "video on BID 1 at both workers\n" + chain.logs(),
            30,
            watch=watched_nsa(nsa, tmp_path / "nsa.log"),
        )
        # BID 1 nears the bound (85 ms >= 0.8 x 100 ms): copies on BID 2 at both ends.
        duplicate = Duplicate(paths=(1, 2))
        driver.metrics(MR_NODE, 1, rtt_ms=85.0)
        wait_until(
            lambda: chain.action(HA_NODE) == duplicate and chain.action(MR_NODE) == duplicate,
            "video duplicated at both workers\n" + chain.logs(),
            10,
        )
        record = driver.latest(MR)
        assert record is not None
        entry = record.explanation.for_class("video")
        assert entry.reason is Reason.PROTECTED
        assert entry.detail.startswith("protected: ")
        assert "delay 85 ms >= 0.8 x 100 ms" in entry.detail
        # Healthy again: after the hold time, one link again (a version-1 forward).
        driver.metrics(MR_NODE, 1, rtt_ms=20.0)
        forward = Forward(bid=1, fallbacks=(2,))
        wait_until(
            lambda: chain.action(HA_NODE) == forward and chain.action(MR_NODE) == forward,
            "video back to one link after the hold\n" + chain.logs(),
            10,
        )
        assert nsa.poll() is None, chain.logs()
