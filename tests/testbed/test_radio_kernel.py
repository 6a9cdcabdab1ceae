"""The second shipped scenario on real packets: the monitor replays a radio trace in which
eth1 fades below what the http class needs, and the NSA moves the stream to eth0 by itself,
then back to eth1 once the radio recovers and the dwell time has passed. No step acts: every
step waits on something the services do, so a pass is the whole chain deciding alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.testbed.scenario import Decider
from tests.testbed.runs import assert_phases, run_scenario, time_of

pytestmark = [pytest.mark.kernel, pytest.mark.broker, pytest.mark.timeout(240)]


def test_radio_fade_moves_the_stream_to_eth0_and_back(
    broker: tuple[str, int], naming: Any, tmp_path: Path
) -> None:
    loaded, _, data, result = run_scenario("radio", Decider.NSA, naming, tmp_path / "run")
    t = {label: time_of(result, label=label) for label in ("t0", "t1", "t2", "t3", "t4", "t5")}
    assert t["t0"] < t["t1"] <= t["t2"] < t["t4"] < t["t5"]
    assert t["t3"] - t["t1"] < 1.0, "the fade was not acted on at once (a hard requirement)"
    dwell = loaded.nsa.settings.dwell_s
    assert t["t5"] - t["t4"] >= dwell - 0.5, "back on eth1 before the dwell time"
    assert_phases(
        data,
        [
            ("t0 -> fade: eth1 (LTE first)", t["t0"] + 0.5, t["t1"] - 0.2, "eth1"),
            ("moved -> recovered: eth0", t["t3"] + 1.0, t["t4"] - 0.2, "eth0"),
            ("back -> end: eth1", t["t5"] + 1.0, result["duration_s"] - 0.3, "eth1"),
        ],
    )
    stream = result["stream"]
    assert stream["bytes"] > 0.9 * loaded.stream.rate_bps / 8 * stream["duration_s"], stream
    assert result["tcp"]["counters"]["TCPTimeouts"] == 0, result["tcp"]
