"""`multinet soap-gateway --config FILE` serves the WSDL and stops cleanly on SIGTERM."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.broker


def test_command_serves_wsdl_and_exits_on_sigterm(
    broker: tuple[str, int], topic_root: str, tmp_path: Path
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        "[soap_gateway]\nport = 0\n"
        'mobile_routers = [{ id = "mr1", ha_node = "ha1", mr_node = "mr1" }]\n'
        f'[broker]\nhost = "{broker[0]}"\nport = {broker[1]}\ntopic_root = "{topic_root}"\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "soap-gateway", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 20
        port = None
        while port is None and time.monotonic() < deadline:
            found = re.search(r"http://127\.0\.0\.1:(\d+)/", proc.stderr.readline())
            port = int(found.group(1)) if found else None
        assert port is not None, "the gateway never said where it listens"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/?wsdl", timeout=10) as response:
            wsdl = response.read()
        assert b"urn:multinet:soap-gateway:1" in wsdl
        for operation in (b"Install", b"Update", b"Flush", b"GetStatus"):
            assert b'operation name="' + operation + b'"' in wsdl
        proc.terminate()
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
