"""The `critical` scenario on real packets, run twice as `multinet testbed run critical` does:
a voice stream both ways on eth1 through its brownout (delay, then loss) and a carrier loss,
with the voice class unprotected, then protected (duplicated on eth0 and eth1 while eth1 is at
risk). The comparison is the point: protection keeps every voice datagram, its absence loses
some.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services import capabilities
from services.testbed import report, scenario
from services.testbed.scenario import Decider
from tests.testbed.runs import run_scenario

pytestmark = [pytest.mark.kernel, pytest.mark.broker, pytest.mark.timeout(300)]


def test_protection_keeps_voice_through_brownout_and_carrier_loss(
    broker: tuple[str, int], naming: Any, tmp_path: Path
) -> None:
    numgen = capabilities.probe(("nft numgen",)).check("nft numgen")
    if not numgen.present:  # the scenario's loss steps drop with nft numgen
        pytest.skip(numgen.missing_text)
    results: dict[str, dict[str, Any]] = {}
    loaded, _ = scenario.load("critical")
    for label, variant in loaded.variants():
        _, _, _, result = run_scenario(
            "critical", Decider.NSA, naming, tmp_path / label, variant=variant
        )
        results[label] = result
    print(report.comparison(results))
    off, on = results["unprotected"]["voice"], results["protected"]["voice"]
    for voice in (off, on):
        assert voice["downlink"]["sent"] > 1000, voice
        assert voice["uplink"]["sent"] > 1000, voice
    assert off["lost"] > 0, f"unprotected voice lost nothing: {off}"
    assert on["lost"] == 0, f"protected voice lost {on['lost']}: {on}"
    assert on["duplicates"] > 0, "no copies while protected"
