"""The gateway stops or dies while a SOAP call waits for an acknowledgement: the caller gets an
answer or a closed connection at once, never a hang until its own timeout.

Real processes on the real broker: the gateway, the HA's worker (nftables in a namespace); the
MR's worker is down, so every call waits for the MR's acknowledgement until the gateway's
deadline (30 s here). A legacy caller posts hand-written envelopes with urllib.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.contracts.policy import Install
from services.ports import free_port
from tests.faults.procs import (
    Service,
    bare_node,
    gateway,
    gateway_config,
    gateway_port,
    prem_config,
    prem_worker,
)
from tests.faults.soap import Answer, envelope, post, scheme1
from tests.observability.scrape import wait_scrape
from tests.prem.factories import udp_to

pytestmark = [pytest.mark.kernel, pytest.mark.broker]
DEADLINE_S = 30
PROMPT_S = 3.0


@dataclass
class Bed:
    gateway: Service
    worker: Service
    worker_metrics: int
    soap_port: int = 0

    def start_gateway(self) -> None:
        self.gateway.start()
        self.soap_port = gateway_port(self.gateway)

    def call_in_background(self, version: int) -> tuple[threading.Thread, dict[str, object]]:
        """Post an Install for both nodes from another thread; the answer (or the error)
        lands in the returned dict with the time it came."""
        outcome: dict[str, object] = {}
        body = scheme1("Install", version, Install(policies=(udp_to("video", 5001, 2),)))
        port = self.soap_port

        def call() -> None:
            try:
                outcome["answer"] = post(port, body, "Install", timeout_s=DEADLINE_S * 2)
            except OSError as exc:
                outcome["error"] = exc
            outcome["at"] = time.monotonic()

        thread = threading.Thread(target=call, name="soap-caller")
        thread.start()
        # The HA applies at once; from then on the call waits for the absent MR only.
        wait_scrape(
            self.worker_metrics, lambda s: s.get("multinet_prem_enforced_version") == version
        )
        time.sleep(0.3)  # let the gateway's handler settle into its wait
        return thread, outcome


@pytest.fixture
def bed(
    make_netns: Callable[[str], str], broker: tuple[str, int], topic_root: str, tmp_path: Path
) -> Iterator[Bed]:
    metrics = free_port()
    worker = prem_worker(
        prem_config(
            tmp_path / "ha1.toml",
            topic_root,
            backend="nftables",
            broker_port=broker[1],
            metrics_port=metrics,
        ),
        bare_node(make_netns("ha")),
        tmp_path / "ha1.log",
    )
    config = gateway_config(
        tmp_path / "gateway.toml", topic_root, broker_port=broker[1], ack_deadline_s=DEADLINE_S
    )
    test_bed = Bed(gateway(config, tmp_path / "gateway.log"), worker, metrics)
    try:
        worker.start()
        wait_scrape(metrics, lambda s: s.get("multinet_broker_connected") == 1)
        test_bed.start_gateway()
        yield test_bed
    finally:
        test_bed.gateway.stop()
        worker.stop()


def test_a_stopping_gateway_answers_the_waiting_call_at_once(bed: Bed) -> None:
    thread, outcome = bed.call_in_background(1)
    assert bed.gateway.proc is not None
    stopped = time.monotonic()
    bed.gateway.proc.send_signal(signal.SIGTERM)
    thread.join(DEADLINE_S)
    answer = outcome.get("answer")
    assert isinstance(answer, Answer), outcome
    # The HA's acknowledgement had arrived; the MR's never will: "not-reached" now, not in 30 s.
    assert answer.outcomes == {"ha1": "applied", "mr1": "not-reached"}
    assert float(str(outcome["at"])) - stopped < PROMPT_S
    assert bed.gateway.proc.wait(10) == 0
    assert "acknowledgement(s) no longer awaited" in bed.gateway.text()


def test_a_killed_gateway_closes_the_call_and_its_successor_reports_the_truth(bed: Bed) -> None:
    thread, outcome = bed.call_in_background(1)
    killed = time.monotonic()
    bed.gateway.kill()
    thread.join(DEADLINE_S)
    assert isinstance(outcome.get("error"), OSError), outcome
    assert float(str(outcome["at"])) - killed < PROMPT_S

    # A new gateway learns the HA's state from its retained presence: the caller can ask.
    bed.start_gateway()
    status = envelope("GetStatus", {"mobile_router": "mr1"})
    deadline = time.monotonic() + 10
    while True:
        nodes = post(bed.soap_port, status, "GetStatus").nodes or {}
        if nodes.get("ha1") == ("true", "1") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert nodes["ha1"] == ("true", "1"), nodes
    assert nodes["mr1"] == (None, None), "the MR was never heard of"
