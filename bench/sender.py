"""A UDP blaster: `python -m bench.sender DST PORT SECONDS COUNT`, run inside the sender namespace.

Sends small datagrams in a tight loop until SECONDS have passed or COUNT were sent (both
bounds always apply), then prints {"sent": ..., "errors": ...} as JSON.
"""

from __future__ import annotations

import json
import socket
import sys
import time

PAYLOAD = b"\x00" * 64
CHECK_EVERY = 256


def blast(dst: str, port: int, seconds: float, count: int) -> tuple[int, int]:
    """Send until the deadline or the count; return (datagrams sent, send errors)."""
    sent = errors = 0
    deadline = time.monotonic() + seconds
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.connect((dst, port))
        send = sock.send
        while sent + errors < count:
            for _ in range(CHECK_EVERY):
                try:
                    send(PAYLOAD)
                    sent += 1
                except OSError:
                    errors += 1
            if time.monotonic() >= deadline:
                break
    return sent, errors


def main(argv: list[str]) -> int:
    """Parse DST PORT SECONDS COUNT, blast, print the totals."""
    dst, port, seconds, count = argv[0], int(argv[1]), float(argv[2]), int(argv[3])
    sent, errors = blast(dst, port, seconds, count)
    print(json.dumps({"sent": sent, "errors": errors}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
