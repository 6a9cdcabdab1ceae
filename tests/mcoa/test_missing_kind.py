"""An agent asked for a pipe kind its kernel lacks ends at once and says why.

No time-out, no half-built state: the probe names the kernel option that is missing and the
kinds that are there, the agent exits with status 1 within a couple of seconds of starting
(the probe itself takes a few hundred milliseconds), and it leaves nothing in the kernel.
"""

from __future__ import annotations

import time

import pytest

from services import capabilities, netns
from tests.mcoa.lab import McoaLab

pytestmark = pytest.mark.kernel


@pytest.mark.parametrize("role", ["ha", "mr"])
def test_a_missing_kind_ends_the_agent_at_once_naming_the_option(
    role: str, mcoa_lab: McoaLab
) -> None:
    caps = capabilities.probe(capabilities.PIPE_KINDS)
    missing = [k for k in capabilities.PIPE_KINDS if not caps.has(k)]
    if not missing:
        pytest.skip("this kernel has every pipe kind: none can be missing")
    kind = missing[0]
    lab = mcoa_lab
    lab.pipe = kind
    started = time.monotonic()
    lab.start(role)
    code = lab.procs[role].wait(timeout=10)
    took = time.monotonic() - started
    log = lab.log(role)
    assert code == 1, log
    assert caps.check(kind).feature.config in log, log
    assert f"pipe kinds available here: {', '.join(caps.pipe_kinds())}" in log, log
    assert "Traceback" not in log, log
    print(f"{role} agent with pipe = {kind!r}: exited after {took:.2f} s")
    assert took < 3.0, f"the agent took {took:.1f} s to say it cannot run"
    ns = lab.ha if role == "ha" else lab.mr
    assert lab.pipe_devices(ns) == []
    assert "proto 147" not in netns.run(ns, ["ip", "-6", "route", "show", "table", "all"])
