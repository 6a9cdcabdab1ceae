"""Wake the moment a namespace's nftables ruleset changes (`nft monitor` in that namespace).

The fault tests kill a worker in the window where its kernel transaction has committed and its
state file is not yet written. Watching for the state file's temporary file came too late on
this machine (the save lasts well under a millisecond on a fast disk); the commit itself, seen
by a monitor, leaves the worker's serialisation of its whole state (milliseconds for thousands
of policies) between the signal and the file.
"""

from __future__ import annotations

import os
import select
import subprocess
import time
from types import TracebackType

from services import netns

_MARK = "multinet_fault_monitor_ready"


class Commits:
    """An `nft monitor` running in `namespace`; use as a context manager, armed at entry."""

    def __init__(self, namespace: str, timeout_s: float = 10.0) -> None:
        self.namespace = namespace
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", namespace, "nft", "monitor"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        # Armed once it reports a change of its own (a table of ours nobody else reads); the
        # change is repeated until then, as the monitor subscribes some time after it starts.
        deadline = time.monotonic() + timeout_s
        while True:
            netns.run(namespace, ["nft", "add", "table", "ip", _MARK])
            netns.run(namespace, ["nft", "delete", "table", "ip", _MARK])
            if self._line_with(_MARK.encode(), 0.2):
                break
            assert time.monotonic() < deadline, "nft monitor never reported a change"

    def _line_with(self, needle: bytes, timeout_s: float) -> bool:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        buffered = b""
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if not ready:
                return False
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                return False
            buffered += chunk
            if needle in buffered:
                return True
        return False

    def wait(self, table: str, timeout_s: float) -> bool:
        """True as soon as a change of `table` is reported; False after `timeout_s`."""
        return self._line_with(table.encode(), timeout_s)

    def __enter__(self) -> Commits:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.proc.kill()
        self.proc.wait(10)
