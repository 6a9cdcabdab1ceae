"""The README's main command: the demo runs end to end and its counters tell the story."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.features import need_backend

pytestmark = [pytest.mark.kernel, pytest.mark.broker]


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_demo_moves_the_flow_as_it_says(backend: str, broker: tuple[str, int]) -> None:
    need_backend(backend)
    proc = subprocess.run(
        [sys.executable, "-m", "services.cli", "prem", "demo", "--backend", backend],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {
        m.group(1): (int(m.group(2)), int(m.group(3)))
        for m in re.finditer(r"^(t\d) .*?\s(\d+)\s+(\d+)$", proc.stdout, re.MULTILINE)
    }
    assert set(rows) == {"t0", "t1", "t2", "t3", "t4"}, proc.stdout
    on_b1 = {step for step, (b1, b2) in rows.items() if b1 >= 400 and b2 <= 5}
    on_b2 = {step for step, (b1, b2) in rows.items() if b2 >= 400 and b1 <= 5}
    assert on_b1 == {"t0", "t2", "t4"}, proc.stdout
    assert on_b2 == {"t1", "t3"}, proc.stdout
