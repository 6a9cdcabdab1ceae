"""The service on the real broker (dry-run delivery): retained preferences, bad input, the
explanation topic and `multinet nsa explain`, a reload on SIGHUP.

The NSA runs in-process here (the same `NsaService` `multinet nsa run` builds), so its log
records are visible; the replica and gateway tests run it as its own process.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from services.contracts.messages import BindingEventKind, PinRequest
from services.contracts.settings import BrokerSettings
from services.nsa.core import Reason
from services.nsa.service import NsaService
from services.nsa.settings import load_file
from tests.nsa.busbed import (
    BusDriver,
    nsa_process,
    tail,
    ticking_driver,
    wait_until,
    watched_nsa,
    write_settings,
)

pytestmark = pytest.mark.broker
MR, MR_NODE, HA_NODE = "mr1", "mr1", "ha1"
ROUTERS = [{"id": MR, "ha_node": HA_NODE, "mr_node": MR_NODE}]
COST_ONLY = {
    "sender": "operator",
    "mobile_router": MR,
    "entries": [{"default": {"cost": 1, "delay": 0, "bandwidth": 0, "security": 0}}],
}


@pytest.fixture
def broker_settings(broker: tuple[str, int], topic_root: str) -> BrokerSettings:
    return BrokerSettings(host=broker[0], port=broker[1], topic_root=topic_root)


@pytest.fixture
def driver(broker_settings: BrokerSettings) -> Iterator[BusDriver]:
    with ticking_driver(broker_settings) as d:
        yield d


@pytest.fixture
def service(broker_settings: BrokerSettings, tmp_path: Path) -> Iterator[NsaService]:
    config = write_settings(
        tmp_path / "nsa.yaml",
        broker_settings,
        ROUTERS,
        nsa={"decision": {"dwell_s": 0.0, "margin": 0.05}},
    )
    nsa = NsaService(config, load_file(config))
    nsa.start()
    yield nsa
    nsa.stop()
    assert nsa.error is None


def _start_links(driver: BusDriver) -> None:
    # BID 1: fast and dear; BID 2: slow and free.
    driver.metrics(MR_NODE, 1, rtt_ms=20.0, cost_per_mb=1.0)
    driver.metrics(MR_NODE, 2, rtt_ms=60.0, cost_per_mb=0.0)
    for bid in (1, 2):
        driver.binding(MR, bid, BindingEventKind.REGISTERED)


def test_bad_retained_preferences_keep_the_last_good_ones(
    service: NsaService, driver: BusDriver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="services.nsa")
    _start_links(driver)
    wait_until(lambda: driver.class_bid(MR) == 1, "delay-only weights (the file): BID 1")
    topic = driver.topics.preferences(MR)
    driver.publish(topic, json.dumps(COST_ONLY).encode(), retain=True)
    wait_until(lambda: driver.class_bid(MR) == 2, "cost-only preferences: BID 2")
    bad = {**COST_ONLY, "entries": [{"default": {"cost": -1, "delay": 1}}]}
    driver.publish(topic, json.dumps(bad).encode(), retain=True)
    wait_until(lambda: "entries.0.default.cost" in caplog.text, "the refusal naming the field")
    assert topic in caplog.text
    driver.publish(topic, b"{not json", retain=True)
    wait_until(lambda: caplog.text.count("refused preferences") == 2, "a second refusal")
    assert "Invalid JSON" in caplog.text
    count = len(driver.decisions)
    driver.metrics(MR_NODE, 1, rtt_ms=5.0, cost_per_mb=1.0)  # material: decide again
    wait_until(lambda: len(driver.decisions) > count, "a decision after the bad documents")
    assert driver.class_bid(MR) == 2, "the cost-only preferences still decide"
    driver.publish(topic, b"", retain=True)  # the operator deletes them: back to the file
    wait_until(lambda: driver.class_bid(MR) == 1, "the file's preferences again")


def test_bad_bus_input_is_refused_with_its_topic(
    service: NsaService, driver: BusDriver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="services.nsa")
    _start_links(driver)
    wait_until(lambda: driver.class_bid(MR) == 1, "a first decision")
    topic = driver.topics.binding_event(MR, 2)
    driver.publish(topic, b'{"kind": "binding-event", "bid": 2}')
    wait_until(lambda: f"malformed binding-event on {topic}" in caplog.text, "the refusal")
    driver.publish(driver.topics.operator_rules(), b'{"sender": "op", "rules": {"x": 1}}')
    wait_until(lambda: "refused operator rules" in caplog.text, "the rules refusal")
    assert service.engine.stats.refused >= 2
    assert service.running


def test_each_decision_is_published_retained_and_nsa_explain_prints_it(
    service: NsaService, driver: BusDriver, broker_settings: BrokerSettings, tmp_path: Path
) -> None:
    _start_links(driver)
    wait_until(lambda: driver.class_bid(MR) == 1, "a first decision")
    driver.binding(MR, 1, BindingEventKind.HANDOVER_STARTED)
    wait_until(lambda: driver.class_bid(MR) == 2, "handover: BID 2 at once")
    latest = driver.latest(MR)
    assert latest is not None
    assert latest.sender == "nsa-test"
    assert latest.explanation.for_class("video").reason is Reason.HANDOVER_STARTED
    config = tmp_path / "nsa.yaml"
    done = _explain(config, MR)
    assert done.returncode == 0, done.stderr
    assert "decided by NSA replica nsa-test" in done.stdout
    assert "mobile router mr1" in done.stdout
    assert "trigger handover-started BID 1" in done.stdout
    assert "class video [best, utility] BID 1 -> BID 2 (handover-started" in done.stdout
    assert "BID 1     wlan     excluded: handover: handover in progress" in done.stdout
    assert "BID 2     lte      score 1.000  <- chosen" in done.stdout


def test_nsa_explain_says_when_there_is_no_decision(
    broker_settings: BrokerSettings, tmp_path: Path
) -> None:
    config = write_settings(tmp_path / "nsa.yaml", broker_settings, ROUTERS)
    done = _explain(config, "mr9", "--timeout", "1")
    assert done.returncode == 1
    assert "no decision for mobile router mr9" in done.stderr
    assert "is an NSA replica deciding for it?" in done.stderr


def _explain(config: Path, mobile_router: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *(sys.executable, "-m", "services.cli", "nsa", "explain", mobile_router),
            *("--config", str(config), *extra),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_sighup_reloads_and_a_bad_file_keeps_the_running_settings(
    driver: BusDriver, broker_settings: BrokerSettings, tmp_path: Path
) -> None:
    config = write_settings(tmp_path / "nsa.yaml", broker_settings, ROUTERS)
    log = tmp_path / "nsa.log"
    with nsa_process(config, log) as proc:
        _start_links(driver)
        wait_until(
            lambda: driver.class_bid(MR) == 1, "a first decision", 30, watch=watched_nsa(proc, log)
        )
        good = yaml.safe_load(config.read_text())
        config.write_text("nsa: {mobile_routers: [}\n")  # not YAML
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "refused, the running settings stay" in log.read_text(), "refusal")
        good["nsa"]["profiles"].append(
            {"name": "voice", "selectors": [{"next_header": 17, "dscp": 46}]}
        )
        good["nsa"]["decision"]["margin"] = 0.2
        config.write_text(yaml.safe_dump(good))
        os.kill(proc.pid, signal.SIGHUP)

        def voice_decided() -> bool:
            latest = driver.latest(MR)
            return latest is not None and any(
                c.class_name == "voice" for c in latest.explanation.classes
            )

        wait_until(voice_decided, "a decision with the reloaded profiles", 20)
        assert proc.poll() is None, tail(log)
    assert "reloaded" in log.read_text()


def test_a_pin_request_on_the_bus_overrides_the_class_and_is_audited(
    driver: BusDriver, service: NsaService
) -> None:
    _start_links(driver)
    wait_until(lambda: driver.class_bid(MR) == 1, "the first decision: the faster BID 1")
    request = PinRequest(
        sender="console", mobile_router=MR, class_name="video", bid=2, duration_s=60, user="bob"
    )
    driver.publish(driver.topics.pin(MR), request)
    wait_until(lambda: driver.class_bid(MR) == 2, "the pinned BID 2")
    latest = driver.latest(MR)
    assert latest is not None
    entry = latest.explanation.for_class("video")
    assert entry.reason is Reason.OPERATOR_OVERRIDE
    assert entry.detail.startswith("operator override by bob until ")
    wait_until(lambda: bool(driver.audits), "the audit record")
    [audit] = driver.audits
    assert (audit.user, audit.action, audit.outcome, audit.bid) == ("bob", "pin", "applied", 2)
    refused = request.model_copy(update={"class_name": "voice"})
    driver.publish(driver.topics.pin(MR), refused)
    wait_until(lambda: len(driver.audits) == 2, "the refusal's audit record")
    assert (driver.audits[1].outcome, driver.audits[1].field) == ("refused", "class_name")
