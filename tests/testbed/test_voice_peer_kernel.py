"""The voice peer's record: every datagram that arrived is in it, even one that arrives as
SIGTERM does (a stream's last datagram once counted as lost that way)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from services import netns
from services.testbed.voice import direction

pytestmark = pytest.mark.kernel

PEERS = 8
ROUNDS = 3


def _peer(ns: str, port: int, out: Path) -> subprocess.Popen[bytes]:
    """A peer that sends to itself over the namespace's loopback (which loses nothing), fast,
    so that SIGTERM often finds a datagram just received."""
    argv = [sys.executable, "-m", "services.testbed.voice", "peer", "--remote", "::1"]
    argv += ["--port", str(port), "--rate", "2000", "--drain-s", "0.3", "--out", str(out)]
    return subprocess.Popen(["ip", "netns", "exec", ns, *argv])


def test_a_peer_stopped_at_any_moment_loses_nothing_it_received(
    make_netns: Callable[[str], str], tmp_path: Path
) -> None:
    ns = make_netns("voice")
    netns.run(ns, ["ip", "link", "set", "lo", "up"])
    rng = random.Random(7)
    for round_ in range(ROUNDS):
        outs = [tmp_path / f"voice-{round_}-{i}.json" for i in range(PEERS)]
        peers = [_peer(ns, 6000 + i, out) for i, out in enumerate(outs)]
        time.sleep(1.0)  # every peer is up and receiving
        for proc in peers:
            time.sleep(rng.uniform(0.0, 0.05))
            proc.send_signal(signal.SIGTERM)
        for proc in peers:
            assert proc.wait(timeout=10) == 0
        for out in outs:
            record = json.loads(out.read_text(encoding="utf-8"))
            counts = direction(record, record)
            assert counts["sent"] > 500, counts
            assert counts["lost"] == 0, counts
