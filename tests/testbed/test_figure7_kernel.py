"""Figure 7 end to end on real packets: every service as its own process in its namespace, an
HTTP stream CN -> MNN, and the traffic shift at every step read back from the MR's counters.

Run twice: with the NSA service deciding (operator rules at t1 and t6, the monitor's link
state and the binding events do the rest), and with the paper's NSA stub (the scenario's own
steps deliver the policies through the SOAP gateway). Both must give the same traffic shifts.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from services import netns
from services.testbed import analysis, plot, report, runner, scenario
from services.testbed.conditions import deltas
from services.testbed.rundata import RunData, RunOptions
from services.testbed.scenario import Decider

pytestmark = [pytest.mark.kernel, pytest.mark.broker, pytest.mark.timeout(240)]

LIMIT_S = 180.0
SHARE = 0.9  # of the stream's packets in each direction on the expected interface


def _share(data: RunData, start: float, end: float, interface: str) -> dict[str, Any]:
    """Packets per direction in [start, end] s after t0, and the share on `interface`."""
    window = [s for s in data.samples if start <= s.at - data.t0 <= end]
    out: dict[str, Any] = {}
    for direction in ("rx", "tx"):
        counts = deltas(window, direction)
        mine = sum(c[interface] for _, c in counts)
        total = sum(sum(c.values()) for _, c in counts)
        out[direction] = (mine / total if total else 0.0, total / max(end - start, 0.1))
    return out


def _time_of(
    result: dict[str, Any], *, label: str | None = None, action: str | None = None
) -> float:
    for row in result["steps"]:
        if label is not None and row.get("label") == label:
            return float(row["t_s"])
        if action is not None and row.get("action", {}).get("name") == action:
            return float(row["t_s"])
    raise AssertionError(f"no step {label or action} in the run")


@pytest.mark.parametrize("decider", [Decider.NSA, Decider.SOAP], ids=lambda d: d.value)
def test_figure7_runs_and_the_stream_follows_every_step(
    decider: Decider, broker: tuple[str, int], naming: Any, tmp_path: Path
) -> None:
    loaded, path = scenario.load("figure7")
    options = RunOptions(
        scenario=loaded,
        scenario_file=path,
        decider=decider,
        out=tmp_path / "run",
        prefix=naming.prefix,
    )
    lines: list[str] = []
    started = time.monotonic()
    data = runner.run(options, say=lines.append)
    took = time.monotonic() - started
    result = analysis.analyse(data)
    report.write(options.out, result)
    figure = plot.draw(result, options.out / "figure7.png")
    print("\n".join(lines))
    print(report.table(result))
    assert data.failure is None, data.failure
    assert took < LIMIT_S, f"the run took {took:.0f} s"
    assert not any(netns.exists(name) for name in naming.all()), "namespaces left behind"

    t = {label: _time_of(result, label=label) for label in ("t0", "t1", "t2", "t3", "t4", "t5")}
    t |= {label: _time_of(result, label=label) for label in ("del", "t6", "t7")}
    attach = _time_of(result, action="attach")
    assert t["t0"] < t["t1"] <= t["t2"] < t["t4"] < attach < t["t5"] < t["del"] <= t["t6"]
    assert t["t3"] - t["t1"] < 1.0
    assert t["t7"] - t["del"] < 1.0

    # The traffic shift at every step, read from the counters (both directions).
    phases = [
        ("t0 -> t1: default path", t["t0"] + 1.0, t["t1"] - 0.2, "eth0"),
        ("t3 -> t4: bound to eth1", t["t3"] + 0.5, t["t4"] - 0.2, "eth1"),
        ("t4 -> handover done: eth0", t["t4"] + 0.5, attach - 0.2, "eth0"),
        ("t5 -> deletion: eth1 again", t["t5"] + 1.0, t["del"] - 0.2, "eth1"),
        ("t7 -> end: default path", t["t7"] + 0.5, result["duration_s"] - 0.3, "eth0"),
    ]
    for name, start, end, interface in phases:
        shares = _share(data, start, end, interface)
        for direction, (share, rate) in shares.items():
            assert share >= SHARE, f"{name}: {direction} share on {interface} is {share:.2f}"
            assert rate > 20, f"{name}: only {rate:.0f} packets/s {direction}: no stream?"

    # The handover: flows left eth1 at once (PREM fallback for the ACKs, the HA's policy for
    # the stream) and came back once the binding moved to the new care-of address.
    detach = next(r for r in result["steps"] if r.get("action", {}).get("name") == "detach")
    assert detach["link"]["downlink_moved_ms"] < 500
    assert detach["link"]["uplink_moved_ms"] < 500
    assert detach["link"]["mr_fallback_ms"] < 200

    stream = result["stream"]
    expected = loaded.stream.rate_bps / 8 * stream["duration_s"]
    assert stream["bytes"] > 0.9 * expected, stream
    assert stream["longest_gap_ms"] < 1000, stream
    assert result["tcp"]["counters"]["TCPTimeouts"] == 0, result["tcp"]
    assert (options.out / "result.json").is_file()
    assert (options.out / "timeline.txt").is_file()
    assert figure is None or figure.is_file()
