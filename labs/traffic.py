"""Test traffic for the lab: a TCP sink and a paced TCP source, each printing one JSON line.

Run inside a namespace as its own process (`ip netns exec NS python -m labs.traffic
sink ...`), so that a long transfer can run while policies change under it.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time

CHUNK = 16384


def sink(port: int, timeout_s: float) -> dict[str, object]:
    """Accept one connection and count its bytes until the peer closes."""
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("::", port))
        server.listen(1)
        server.settimeout(timeout_s)
        print(json.dumps({"listening": port}), flush=True)
        conn, _ = server.accept()
        received = 0
        error = ""
        with conn:
            conn.settimeout(timeout_s)
            try:
                while data := conn.recv(CHUNK):
                    received += len(data)
            except OSError as exc:
                error = repr(exc)
        return {"bytes": received, "error": error}


def source(host: str, port: int, total: int, seconds: float) -> dict[str, object]:
    """Send `total` bytes evenly over `seconds`, then close."""
    sent = 0
    error = ""
    started = time.monotonic()
    payload = b"m" * CHUNK
    try:
        with socket.create_connection((host, port), timeout=10) as conn:
            while sent < total:
                due = started + seconds * sent / total
                if (wait := due - time.monotonic()) > 0:
                    time.sleep(wait)
                chunk = payload[: min(CHUNK, total - sent)]
                conn.sendall(chunk)
                sent += len(chunk)
            conn.shutdown(socket.SHUT_WR)
            conn.recv(1)
    except OSError as exc:
        error = repr(exc)
    return {"bytes": sent, "error": error, "seconds": time.monotonic() - started}


def main() -> int:
    """Command line: `sink --port P` or `source --host H --port P --bytes N --seconds S`."""
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="role", required=True)
    s = sub.add_parser("sink")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--timeout", type=float, default=60)
    c = sub.add_parser("source")
    c.add_argument("--host", required=True)
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--bytes", type=int, required=True)
    c.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    if args.role == "sink":
        result = sink(args.port, args.timeout)
    else:
        result = source(args.host, args.port, args.bytes, args.seconds)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
