"""Running a shipped scenario in a test and reading the traffic shift back from its counters."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from services import capabilities, netns
from services.testbed import analysis, plot, report, runner, scenario
from services.testbed.addressing import Naming
from services.testbed.conditions import deltas
from services.testbed.rundata import RunData, RunOptions
from services.testbed.scenario import Decider

LIMIT_S = 180.0  # the bound for one scenario run, set-up and teardown included
SHARE = 0.9  # of the stream's packets in each direction on the expected interface


def run_scenario(
    name: str,
    decider: Decider,
    naming: Naming,
    out: Path,
    pipe: str = "auto",
    variant: scenario.Scenario | None = None,
) -> tuple[Any, RunOptions, RunData, dict[str, Any]]:
    """Run a shipped scenario as `multinet testbed run` does, with pipes of kind `pipe`; check
    the run's own promises: no failure, within LIMIT_S, nothing left behind, the pipe kind
    named in the result. Returns (scenario, options, data, result). `variant`: one of the
    scenario's variants (`Scenario.variants`) instead of the file as written.
    """
    loaded, path = scenario.load(name)
    loaded = variant or loaded
    options = RunOptions(
        scenario=loaded,
        scenario_file=path,
        decider=decider,
        out=out,
        prefix=naming.prefix,
        pipe=pipe,
    )
    lines: list[str] = []
    started = time.monotonic()
    data = runner.run(options, say=lines.append)
    took = time.monotonic() - started
    result = analysis.analyse(data)
    report.write(options.out, result)
    plot.draw(result, options.out / f"{name}.png")
    print("\n".join(lines))
    print(report.table(result))
    assert data.failure is None, data.failure
    assert took < LIMIT_S, f"the run took {took:.0f} s"
    assert not any(netns.exists(n) for n in naming.all()), "namespaces left behind"
    assert (options.out / "result.json").is_file()
    assert (options.out / "timeline.txt").is_file()
    assert result["pipe_kind"] in (capabilities.PIPE_KINDS if pipe == "auto" else (pipe,))
    assert f"{result['pipe_kind']} pipes" in (options.out / "timeline.txt").read_text()
    return loaded, options, data, result


def share(data: RunData, start: float, end: float, interface: str) -> dict[str, Any]:
    """Packets per direction in [start, end] s after t0: (share on `interface`, packets/s)."""
    window = [s for s in data.samples if start <= s.at - data.t0 <= end]
    out: dict[str, Any] = {}
    for direction in ("rx", "tx"):
        counts = deltas(window, direction)
        mine = sum(c[interface] for _, c in counts)
        total = sum(sum(c.values()) for _, c in counts)
        out[direction] = (mine / total if total else 0.0, total / max(end - start, 0.1))
    return out


def assert_phases(data: RunData, phases: list[tuple[str, float, float, str]]) -> None:
    """Each (name, start, end, interface): the stream and its ACKs on that interface."""
    for name, start, end, interface in phases:
        for direction, (part, rate) in share(data, start, end, interface).items():
            assert part >= SHARE, f"{name}: {direction} share on {interface} is {part:.2f}"
            assert rate > 20, f"{name}: only {rate:.0f} packets/s {direction}: no stream?"


def time_of(
    result: dict[str, Any], *, label: str | None = None, action: str | None = None
) -> float:
    """When the step with this label (or the first with this action) was met, s after t0."""
    for row in result["steps"]:
        if label is not None and row.get("label") == label:
            return float(row["t_s"])
        if action is not None and row.get("action", {}).get("name") == action:
            return float(row["t_s"])
    raise AssertionError(f"no step {label or action} in the run")
