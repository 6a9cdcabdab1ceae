"""A mosquitto of the test's own, restartable on the same port, with persistence on disk.

Like the shipped broker (deploy/mosquitto/mosquitto.conf) it keeps sessions, their queued QoS 1
messages and retained messages in a persistence file, written when it stops; unlike it, no
authentication (the ACL is proven in tests/deploy). Started as root, mosquitto drops to its own
user before touching its files, so the directory is handed to that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from services.ports import free_port
from services.process import stop


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class OwnBroker:
    """One broker on `port`; `start`, `stop` (SIGTERM: persistence saved), `kill` (SIGKILL)."""

    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mn-fault-")))
    port: int = field(default_factory=free_port)
    #: More configuration lines (e.g. autosave_on_changes).
    extra: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def persistence_file(self) -> Path:
        """Where mosquitto keeps sessions and queued messages."""
        return self.directory / "mosquitto.db"

    def start(self, timeout_s: float = 10.0) -> None:
        """Start on `port` and wait until it accepts connections."""
        conf = self.directory / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.directory}/\n"
            "autosave_interval 60\n"
            "max_queued_messages 1000\n"
            "set_tcp_nodelay true\n"
            "log_type all\n"
            "connection_messages true\n"
            "log_timestamp_format %Y-%m-%dT%H:%M:%S\n" + self.extra,
            encoding="utf-8",
        )
        if os.geteuid() == 0:
            account = pwd.getpwnam("mosquitto")
            for path in [self.directory, *self.directory.iterdir()]:
                os.chown(path, account.pw_uid, account.pw_gid)
        with (self.directory / "broker.log").open("ab") as log:
            self.proc = subprocess.Popen(
                ["mosquitto", "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout_s
        while not _listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not start on {self.port}:\n{self.log()}")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM: mosquitto writes its persistence file and exits."""
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL: whatever was not saved yet is lost."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def restart(self, *, down_s: float = 0.0) -> None:
        """Stop, stay down for `down_s`, start again on the same port."""
        self.stop()
        time.sleep(down_s)  # the outage itself is what is being tested
        self.start()

    def log(self) -> str:
        """What the broker logged, every run."""
        path = self.directory / "broker.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def remove(self) -> None:
        """Stop and delete the directory."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
