"""Network namespaces for the test bed, the demo, tests and benchmarks.

Commands are argument lists (never shell strings). `call_in` runs a Python callable inside a
namespace in a forked child, so that libraries opening netlink sockets (libnftables, libiptc,
pyroute2) see that namespace and the caller's own namespace is never touched.

`enter` is pyroute2's `setns` (a dependency already) with a clearer error; Python 3.12's
`os.setns` would do without it, but 3.11 (Debian 12) has none.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")
NETNS_DIR = "/run/netns"


class NetnsCallError(RuntimeError):
    """The callable raised inside the namespace; the message holds the child's traceback."""


def exists(name: str) -> bool:
    """Whether a named namespace exists."""
    return os.path.exists(os.path.join(NETNS_DIR, name))


def create(name: str) -> None:
    """Create a named namespace (replacing a leftover of the same name) with loopback up."""
    if exists(name):
        delete(name)
    subprocess.run(["ip", "netns", "add", name], check=True)
    run(name, ["ip", "link", "set", "lo", "up"])


def delete(name: str) -> None:
    """Delete a named namespace; a missing one is not an error."""
    if exists(name):
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def run(name: str, argv: list[str], *, check: bool = True, timeout: float = 60) -> str:
    """Run a command inside namespace `name`; return its standard output."""
    proc = subprocess.run(
        ["ip", "netns", "exec", name, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, argv, proc.stdout, proc.stderr)
    return proc.stdout


def veth(ns_a: str, a: str, ns_b: str, b: str, index: int, *, peer_mac: str | None = None) -> None:
    """A veth pair `a` (in ns_a, ifindex `index`) <-> `b` (in ns_b, ifindex `index + 1`), up.

    Unique ifindexes matter: with equal indexes in two namespaces, carrier changes are batched
    and reach netlink listeners about a second late (docs/kernel.md).
    """
    mac = ["address", peer_mac] if peer_mac is not None else []
    run(
        ns_a,
        [
            "ip",
            "link",
            "add",
            a,
            "index",
            str(index),
            "type",
            "veth",
            "peer",
            "name",
            b,
            "index",
            str(index + 1),
            "netns",
            ns_b,
            *mac,
        ],
    )
    run(ns_a, ["ip", "link", "set", a, "up"])
    run(ns_b, ["ip", "link", "set", b, "up"])


def _setns() -> Callable[..., None]:
    """pyroute2's setns, imported on first use: importing pyroute2 takes about 0.1 s, which the
    CLI and the services that never enter a namespace need not pay."""
    from pyroute2 import netns as pyroute2_netns

    setns: Callable[..., None] = pyroute2_netns.setns
    return setns


def enter(name: str) -> None:
    """Move the calling thread (the whole process, if single-threaded) into namespace `name`.

    Raises OSError "setns into NAME: REASON" (a missing namespace is never created).
    """
    try:
        # flags=0: pyroute2's default (O_CREAT) would create a missing namespace.
        _setns()(os.path.join(NETNS_DIR, name), flags=0)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise OSError(exc.errno, f"setns into {name}: {reason}") from exc


def _child(
    conn: Connection, name: str, fn: Callable[..., object], args: tuple[object, ...]
) -> None:
    try:
        enter(name)
        conn.send(("ok", fn(*args)))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def call_in(name: str, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run `fn(*args)` in a forked child inside namespace `name` and return its result."""
    if kwargs:
        raise TypeError("call_in passes positional arguments only")
    _setns()  # imported once here, not again in every forked child
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, name, fn, args), daemon=True)
    proc.start()
    child.close()
    try:
        status, value = parent.recv()
    except EOFError as exc:
        raise NetnsCallError(f"child in {name} died without an answer") from exc
    finally:
        proc.join()
    if status == "error":
        raise NetnsCallError(f"in namespace {name}:\n{value}")
    return value  # type: ignore[no-any-return]
