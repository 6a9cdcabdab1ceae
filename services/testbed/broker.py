"""A broker for the test bed, the demo and the benchmarks: the one already listening, or a
mosquitto started for them.

`multinet testbed run` and `multinet prem demo` need a broker on the host; on a machine that
has mosquitto installed but not running (a fresh lab machine), they start it rather than fail.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time


def ensure_broker(host: str = "127.0.0.1", port: int = 1883, timeout_s: float = 10.0) -> None:
    """Start mosquitto on host:port unless a broker already answers there."""
    if _answers(host, port):
        return
    if shutil.which("mosquitto") is None:
        raise RuntimeError(f"no MQTT broker on {host}:{port} and mosquitto is not installed")
    subprocess.run(["mosquitto", "-d", "-p", str(port)], check=True)
    deadline = time.monotonic() + timeout_s
    while not _answers(host, port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"mosquitto did not start listening on {host}:{port}")
        time.sleep(0.1)


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
