"""A real etcd of our own for the fault tests and bench.nsa: Debian's `etcd-server`
(scripts/setup.sh installs it) on free ports with its own data directory, removed afterwards.

Its raft timers are shortened (heartbeat 50 ms, election 250 ms) so that it grants the NSA's
one-second leases (etcd raises a TTL below about 1.5 election timeouts): the fault tests
then see a dead replica's partitions move within their 3 s budget. A production etcd with
the default timers grants 2 s at least (docs/fleet.md).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from services.nsa.etcd import Etcd, EtcdError
from services.ports import free_port
from services.process import stop


def etcd_binary() -> str | None:
    """The etcd server on PATH, or None (the tests then skip naming the package)."""
    return shutil.which("etcd")


@contextmanager
def running_etcd(workdir: Path) -> Iterator[str]:
    """Start etcd; yield its client URL; stop it and delete its data."""
    binary = etcd_binary()
    assert binary is not None
    client, peer = free_port(), free_port()
    url = f"http://127.0.0.1:{client}"
    data = workdir / "etcd-data"
    log = workdir / "etcd.log"
    argv = [
        binary,
        "--name",
        "test",
        "--data-dir",
        str(data),
        "--listen-client-urls",
        url,
        "--advertise-client-urls",
        url,
        "--listen-peer-urls",
        f"http://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls",
        f"http://127.0.0.1:{peer}",
        "--initial-cluster",
        f"test=http://127.0.0.1:{peer}",
        "--heartbeat-interval",
        "50",
        "--election-timeout",
        "250",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            probe = Etcd(url)
            try:
                probe.range("/probe/")
                break
            except EtcdError:
                pass
            finally:
                probe.close()
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"etcd did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield url
    finally:
        stop(proc)
        shutil.rmtree(data, ignore_errors=True)
