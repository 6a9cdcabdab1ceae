"""A mosquitto of the benchmark's own, tuned for latency.

The shared broker on 1883 runs with Nagle's algorithm on, so a small message that follows
another one not yet acknowledged waits for the peer's delayed ACK (about 40 ms). Latency
benchmarks start their own broker with `set_tcp_nodelay true` instead, so they measure our
services, not that wait.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from services.ports import free_port
from services.process import stop


@contextmanager
def tuned_broker(workdir: Path) -> Iterator[tuple[int, int]]:
    """A mosquitto with Nagle off, listening on 127.0.0.1; yields (port, pid)."""
    port = free_port()
    config = workdir / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n",
        encoding="utf-8",
    )
    with (workdir / "mosquitto.log").open("wb") as log:
        proc = subprocess.Popen(
            ["mosquitto", "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the benchmark's mosquitto did not start") from None
                time.sleep(0.05)
        yield port, proc.pid
    finally:
        stop(proc)
