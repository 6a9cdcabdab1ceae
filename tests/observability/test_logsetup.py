"""services/logsetup.py: node id on every line, one JSON object per line, crashes included.

Each case runs in a child interpreter: `configure` replaces the root handler and the exception
hooks, which must not leak into the test process.
"""

from __future__ import annotations

import json
import subprocess
import sys

_PROGRAM = """
import logging, threading
from services import logsetup
logsetup.configure("node-7", json_lines={json_lines})
logging.getLogger("services.example").info("hello %s", "there")
try:
    raise ValueError("handled")
except ValueError:
    logging.getLogger("services.example").exception("caught")
thread = threading.Thread(target=lambda: 1 / 0, name="worker-thread")
thread.start()
thread.join()
raise RuntimeError("the end")
"""


def _run(*, json_lines: bool) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _PROGRAM.format(json_lines=json_lines)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_json_lines_carry_the_node_and_every_traceback() -> None:
    done = _run(json_lines=True)
    assert done.returncode == 1
    records = [json.loads(line) for line in done.stderr.splitlines()]
    assert {r["node"] for r in records} == {"node-7"}
    hello, caught, thread, crash = records
    assert (hello["message"], hello["logger"], hello["level"]) == (
        "hello there",
        "services.example",
        "INFO",
    )
    assert "ValueError: handled" in caught["exception"]
    assert thread["message"] == "uncaught exception in thread worker-thread"
    assert "ZeroDivisionError" in thread["exception"]
    assert crash["level"] == "CRITICAL"
    assert "RuntimeError: the end" in crash["exception"]


def test_text_lines_carry_the_node() -> None:
    done = _run(json_lines=False)
    first = done.stderr.splitlines()[0]
    assert "[node-7] INFO services.example: hello there" in first
    assert "RuntimeError: the end" in done.stderr
