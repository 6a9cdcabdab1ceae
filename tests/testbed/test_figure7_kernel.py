"""Figure 7 end to end on real packets: every service as its own process in its namespace, an
HTTP stream CN -> MNN, and the traffic shift at every step read back from the MR's counters.

Run with the NSA service deciding (operator rules at t1 and t6, the monitor's link state and
the binding events do the rest) once per pipe kind this kernel has, and with the paper's NSA
stub (the scenario's own steps deliver the policies through the SOAP gateway) on the kind
`auto` picks. All must give the same traffic shifts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.testbed.scenario import Decider
from tests.testbed.runs import assert_phases, run_scenario, time_of

pytestmark = [pytest.mark.kernel, pytest.mark.broker, pytest.mark.timeout(240)]


def test_figure7_with_the_nsa_on_each_pipe_kind(
    pipe_kind: str, broker: tuple[str, int], naming: Any, tmp_path: Path
) -> None:
    _figure7(Decider.NSA, pipe_kind, naming, tmp_path)


def test_figure7_with_the_soap_stub(broker: tuple[str, int], naming: Any, tmp_path: Path) -> None:
    _figure7(Decider.SOAP, "auto", naming, tmp_path)


def _figure7(decider: Decider, pipe: str, naming: Any, tmp_path: Path) -> None:
    loaded, _, data, result = run_scenario("figure7", decider, naming, tmp_path / "run", pipe)

    t = {label: time_of(result, label=label) for label in ("t0", "t1", "t2", "t3", "t4", "t5")}
    t |= {label: time_of(result, label=label) for label in ("del", "t6", "t7")}
    attach = time_of(result, action="attach")
    assert t["t0"] < t["t1"] <= t["t2"] < t["t4"] < attach < t["t5"] < t["del"] <= t["t6"]
    assert t["t3"] - t["t1"] < 1.0
    assert t["t7"] - t["del"] < 1.0

    # The traffic shift at every step, read from the counters (both directions).
    assert_phases(
        data,
        [
            ("t0 -> t1: default path", t["t0"] + 1.0, t["t1"] - 0.2, "eth0"),
            ("t3 -> t4: bound to eth1", t["t3"] + 0.5, t["t4"] - 0.2, "eth1"),
            ("t4 -> handover done: eth0", t["t4"] + 0.5, attach - 0.2, "eth0"),
            ("t5 -> deletion: eth1 again", t["t5"] + 1.0, t["del"] - 0.2, "eth1"),
            ("t7 -> end: default path", t["t7"] + 0.5, result["duration_s"] - 0.3, "eth0"),
        ],
    )

    # The handover: flows left eth1 at once (PREM fallback for the ACKs, the HA's policy for
    # the stream) and came back once the binding moved to the new care-of address.
    rows = {r.get("action", {}).get("name"): r for r in result["steps"] if "action" in r}
    assert rows["detach"]["link"]["downlink_moved_ms"] < 500
    assert rows["detach"]["link"]["uplink_moved_ms"] < 500
    assert rows["detach"]["link"]["mr_fallback_ms"] < 200
    assert rows["attach"]["link"]["downlink_moved_ms"] < 1000, "no return after the handover"

    stream = result["stream"]
    expected = loaded.stream.rate_bps / 8 * stream["duration_s"]
    assert stream["bytes"] > 0.9 * expected, stream
    assert stream["longest_gap_ms"] < 1000, stream
    assert result["tcp"]["counters"]["TCPTimeouts"] == 0, result["tcp"]
