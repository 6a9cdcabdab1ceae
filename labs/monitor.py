"""A namespace lab for the link monitor: a mobile router with links to access routers.

```
 [mr] eth0 ---- ar0 [ar1]     eth0: 2001:db8:1::10    ar0: 2001:db8:1::1
      eth1 ---- ar0 [ar2]     eth1: 2001:db8:2::10    ar0: 2001:db8:2::1
      ...
```
The monitor runs as a real `multinet monitor --netns` process; a `BusRecorder` subscribes to its
topics and keeps every message with the time it arrived. Used by the kernel tests and the
benchmark; every command is an argument list.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from pydantic import ValidationError

from services import bus, netns
from services.contracts.messages import Envelope, LinkMetrics, LinkState, Presence, decode
from services.contracts.settings import BrokerSettings
from services.contracts.topics import TopicKind, Topics
from services.process import stop

MR_NODE = "mr1"
FIRST_INDEX = 4100
_SYSCTLS = (
    "net.ipv6.conf.all.keep_addr_on_down=1",
    "net.ipv6.conf.all.accept_dad=0",
    "net.ipv6.conf.default.accept_dad=0",
)  # unique ifindexes per lab link pair (docs/kernel.md)


def mr_address(link: int) -> IPv6Address:
    """The MR's address on link `link` (0-based)."""
    return IPv6Address(f"2001:db8:{link + 1}::10")


def ar_address(link: int) -> IPv6Address:
    """The access router's address on link `link`, the probe target."""
    return IPv6Address(f"2001:db8:{link + 1}::1")


@dataclass
class MonitorLab:
    """Names of the lab's namespaces; `build()` creates them, `destroy()` removes them."""

    links: int = 2
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    index_base: int = FIRST_INDEX

    @property
    def mr(self) -> str:
        """The mobile router's namespace (where the monitor watches)."""
        return f"mnm-mr-{self.tag}"

    def ar(self, link: int) -> str:
        """The access router namespace at the far end of link `link`."""
        return f"mnm-ar{link + 1}-{self.tag}"

    @staticmethod
    def interface(link: int) -> str:
        """The MR's device of link `link`."""
        return f"eth{link}"

    def build(self) -> None:
        """Create the namespaces and links (each veth end with its own ifindex), addresses up."""
        netns.create(self.mr)
        for name in (self.mr, *(self.ar(link) for link in range(self.links))):
            if name != self.mr:
                netns.create(name)
            # No DAD: link-local addresses are usable at once instead of appearing (as address
            # events) a second or two after the monitor has started.
            for key in _SYSCTLS:
                netns.run(name, ["sysctl", "-qw", key])
        for link in range(self.links):
            self.add_link(link)

    def add_link(self, link: int) -> None:
        """(Re)create link `link`: the veth pair and both addresses (no DAD: usable at once)."""
        netns.veth(self.mr, self.interface(link), self.ar(link), "ar0", self.index_base + 2 * link)
        mr_side = ["ip", "-6", "addr", "add", f"{mr_address(link)}/64"]
        netns.run(self.mr, [*mr_side, "dev", self.interface(link), "nodad"])
        ar_side = ["ip", "-6", "addr", "add", f"{ar_address(link)}/64"]
        netns.run(self.ar(link), [*ar_side, "dev", "ar0", "nodad"])

    def remove_link(self, link: int) -> None:
        """Delete link `link`'s veth pair (the MR's device vanishes)."""
        netns.run(self.mr, ["ip", "link", "del", self.interface(link)])

    def destroy(self) -> None:
        """Remove every namespace of the lab (missing ones are fine)."""
        for link in range(self.links):
            netns.delete(self.ar(link))
        netns.delete(self.mr)

    def set_peer(self, link: int, *, up: bool) -> None:
        """Take the access router's end of a link down or up (the MR sees carrier change)."""
        netns.run(self.ar(link), ["ip", "link", "set", "ar0", "up" if up else "down"])

    def ignore_echo(self, link: int, *, ignore: bool) -> None:
        """Make the access router stop (or resume) answering ICMPv6 echo requests."""
        value = "1" if ignore else "0"
        netns.run(self.ar(link), ["sysctl", "-qw", f"net.ipv6.icmp.echo_ignore_all={value}"])

    def config(
        self,
        path: Path,
        broker: BrokerSettings,
        *,
        links: Sequence[dict[str, Any]] | None = None,
        **monitor: Any,
    ) -> Path:
        """Write a monitor settings file for this lab (ICMP probes to each AR by default)."""
        entries = links or [
            {
                "interface": self.interface(link),
                "bid": link + 1,
                "technology": "wlan" if link == 0 else "lte",
                "probe": {"kind": "icmp", "target": str(ar_address(link))},
            }
            for link in range(self.links)
        ]
        lines = [
            "[monitor]",
            f'node = "{MR_NODE}"',
            *(f"{key} = {_toml(value)}" for key, value in monitor.items()),
            *(f"[[monitor.links]]\n{_table(entry)}" for entry in entries),
            "[broker]",
            f'host = "{broker.host}"',
            f"port = {broker.port}",
            f'topic_root = "{broker.topic_root}"',
        ]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return str(value)


def _table(entry: dict[str, Any]) -> str:
    return "\n".join(f"{key} = {_toml(value)}" for key, value in entry.items())


@contextmanager
def monitor_lab(links: int = 2) -> Iterator[MonitorLab]:
    """A built lab, destroyed on exit."""
    lab = MonitorLab(links)
    lab.destroy()
    try:
        lab.build()
        yield lab
    finally:
        lab.destroy()


@contextmanager
def monitor_process(
    config: Path, lab: MonitorLab, *extra: str, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`multinet monitor --config FILE --netns MR` as a child process, terminated on exit."""
    argv = [sys.executable, "-m", "services.cli", "monitor", "--config", str(config)]
    argv += ["--netns", lab.mr, *extra]
    out = log.open("wb") if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        yield proc
    finally:
        stop(proc)
        if log is not None and not isinstance(out, int):
            out.close()


MessageT = TypeVar("MessageT", bound=Envelope)
_MODELS: dict[TopicKind, type[Envelope]] = {
    TopicKind.LINK_STATE: LinkState,
    TopicKind.LINK_METRICS: LinkMetrics,
    TopicKind.PRESENCE: Presence,
}


@dataclass(frozen=True, slots=True)
class Received:
    """One message and the monotonic time it reached the subscriber."""

    at: float
    message: Envelope


class BusRecorder:
    """Subscribes to one node's link topics and presence; keeps what arrives, in order."""

    def __init__(self, broker: BrokerSettings, node: str = MR_NODE) -> None:
        self.topics = Topics(broker.topic_root)
        self.node = node
        self.broker = broker.model_copy(update={"session_expiry_s": 0})
        self.inbox: queue.Queue[Received] = queue.Queue()
        self.seen: list[Received] = []
        self.client = bus.make_client(self.broker, f"monitor-recorder-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    def __enter__(self) -> BusRecorder:
        bus.start(self.client, self.broker)
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, *args: object) -> None:
        topics = self.topics
        client.subscribe([(topics.links(self.node), 1), (topics.presences(self.node), 1)])

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        payload = bytes(msg.payload)
        name = self.topics.parse(msg.topic)
        model = None if name is None else _MODELS.get(name.kind)
        if model is None:
            return
        try:
            self.inbox.put(Received(now, decode(model, payload)))
        except ValidationError:
            return

    def wait_for(
        self,
        kind: type[MessageT],
        predicate: Callable[[MessageT], bool] = lambda _: True,
        *,
        timeout: float = 10.0,
    ) -> tuple[float, MessageT]:
        """The first message of `kind` (already seen or arriving) that satisfies `predicate`."""
        for item in self.seen:
            if isinstance(item.message, kind) and predicate(item.message):
                return item.at, item.message
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                item = self.inbox.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(item)
            if isinstance(item.message, kind) and predicate(item.message):
                return item.at, item.message
        raise TimeoutError(f"no {kind.__name__} matching the condition within {timeout} s")

    def forget(self) -> None:
        """Drop what was seen so far (a later `wait_for` only looks at newer messages)."""
        while not self.inbox.empty():
            self.seen.append(self.inbox.get_nowait())
        self.seen.clear()
