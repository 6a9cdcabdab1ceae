"""Free TCP ports on the loopback, for the endpoints a test bed, a test or a benchmark starts.

The one place that asks the kernel for a port: bind port 0, read the port it chose, close. The
port is free when this returns, not reserved: the caller hands it to the process that listens
on it at once, and that process says so if someone took it in between.
"""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` (IPv4) that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
