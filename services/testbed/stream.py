"""The workload: a paced HTTP "video" stream from the CN and its receiver on the MNN.

The paper's Figure 7 follows an HTTP video stream and the TCP ACKs the MNN returns. The server
is an `http.server` subclass that answers `GET /stream` with an endless body sent in chunks at
a fixed bit rate (paced against the monotonic clock, so a stall is followed by a catch-up,
like a player's buffer refilling). The receiver reads until SIGTERM and writes what it got,
with the monotonic time of every read, as JSON: the bytes delivered and the longest gap in
the stream come from there. Both run as processes inside their node's namespace
(`python -m services.testbed.stream serve|fetch ...` under `ip netns exec`); CLOCK_MONOTONIC
is the same in every namespace, so their times line up with the runner's.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType

DEFAULT_PORT = 8080
DEFAULT_RATE_BPS = 2_000_000
DEFAULT_CHUNK_INTERVAL_S = 0.02
PATH = "/stream"


class _Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    rate_bps: int = DEFAULT_RATE_BPS
    interval_s: float = DEFAULT_CHUNK_INTERVAL_S


class StreamHandler(BaseHTTPRequestHandler):
    """`GET /stream`: an endless paced body, until the client goes away."""

    server: _Server
    protocol_version = "HTTP/1.0"  # the end of the connection ends the body

    def do_GET(self) -> None:
        if self.path.split("?")[0] != PATH:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "video/mp2t")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        chunk = b"\x47" * max(1, int(self.server.rate_bps * self.server.interval_s / 8))
        due = time.monotonic()
        try:
            while True:
                self.wfile.write(chunk)
                due += self.server.interval_s
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        except (BrokenPipeError, ConnectionResetError):
            return

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"stream server: {self.address_string()} {format % args}\n")


def serve(port: int, rate_bps: int, interval_s: float) -> int:
    """Serve the stream on [::]:port until SIGTERM (its default action ends the process)."""
    server = _Server(("::", port), StreamHandler)
    server.rate_bps = rate_bps
    server.interval_s = interval_s
    print(f"stream server: {rate_bps} b/s in chunks every {interval_s * 1000:g} ms on port {port}")
    sys.stdout.flush()
    server.serve_forever(poll_interval=0.2)
    return 0


class _Stop(Exception):  # noqa: N818 - the name reads as what happened
    """SIGTERM arrived: stop reading and write the record."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def fetch(host: str, port: int, out: Path, connect_timeout_s: float = 10.0) -> int:
    """Read the stream until SIGTERM (or its end); write the record of every read to `out`."""
    signal.signal(signal.SIGTERM, _raise_stop)
    started = time.monotonic()
    reads: list[tuple[float, int]] = []
    error = ""
    try:
        with socket.create_connection((host, port), timeout=connect_timeout_s) as sock:
            sock.settimeout(None)
            sock.sendall(f"GET {PATH} HTTP/1.0\r\nHost: [{host}]\r\n\r\n".encode())
            while True:
                data = sock.recv(65536)
                if not data:
                    error = "the server closed the stream"
                    break
                reads.append((time.monotonic(), len(data)))
    except _Stop:
        pass
    except OSError as exc:
        error = str(exc)
    record = {"started": started, "stopped": time.monotonic(), "error": error, "reads": reads}
    out.write_text(json.dumps(record), encoding="utf-8")
    return 0 if not error else 1


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m services.testbed.stream serve|fetch ...`."""
    parser = argparse.ArgumentParser(prog="services.testbed.stream")
    sub = parser.add_subparsers(dest="command", required=True)
    srv = sub.add_parser("serve", help="serve the paced stream (on the CN)")
    srv.add_argument("--port", type=int, default=DEFAULT_PORT)
    srv.add_argument("--rate-bps", type=int, default=DEFAULT_RATE_BPS)
    srv.add_argument("--interval-s", type=float, default=DEFAULT_CHUNK_INTERVAL_S)
    get = sub.add_parser("fetch", help="receive the stream until SIGTERM (on the MNN)")
    get.add_argument("--host", required=True)
    get.add_argument("--port", type=int, default=DEFAULT_PORT)
    get.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args.port, args.rate_bps, args.interval_s)
    return fetch(args.host, args.port, args.out)


if __name__ == "__main__":
    sys.exit(main())
