"""A two-namespace lab for the mobility-events service: real BU/BA signalling over a veth.

```
 [mr] mr0 ---- ha0 [ha]      mr0: 2001:db8:ff::10 (CoA 1), 2001:db8:ff::20 (CoA 2)
                              ha0: 2001:db8:ff::1 (home agent)
```
The service captures in the HA namespace: BUs from the MR arrive on its raw socket, the BAs
the HA sends leave through its packet tap. Signalling is sent through raw protocol-135
sockets with a zero checksum, which the kernel fills in (docs/kernel.md). Used by the kernel tests
and the latency benchmark; every command is an argument list.
"""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path

import paho.mqtt.client as mqtt
from pydantic import ValidationError

from services import bus, netns
from services.contracts.messages import BindingEvent, BindingEventKind, Presence, decode
from services.contracts.settings import BrokerSettings
from services.contracts.topics import TopicKind, Topics
from services.mobility_header.codec import IPPROTO_MH, BindingAcknowledgement, BindingUpdate, encode
from services.mobility_header.mh_options import BindingIdentifier, MobileNetworkPrefix
from services.process import stop

HA_ADDRESS = IPv6Address("2001:db8:ff::1")
COA1 = IPv6Address("2001:db8:ff::10")
COA2 = IPv6Address("2001:db8:ff::20")
MNP = IPv6Network("2001:db8:aaaa::/48")
MR_ID = "mr1"
HA_NODE = "ha1"


def raw_socket_in(name: str, source: IPv6Address) -> socket.socket:
    """A raw protocol-135 socket of namespace `name`, bound to `source`.

    A socket belongs to the namespace it was created in, whichever thread uses it later: a
    short-lived thread enters the namespace (setns moves only that thread) and makes it.
    """
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def make() -> None:
        try:
            netns.enter(name)
            sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, IPPROTO_MH)
            sock.bind((str(source), 0))
            made.append(sock)
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=make, name=f"socket-in-{name}")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return made[0]


@dataclass
class MobilityLab:
    """Names of the lab's namespaces; `build()` creates them, `destroy()` removes them."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])

    @property
    def ha(self) -> str:
        """The home agent's namespace (where the service captures)."""
        return f"mnt-ha-{self.tag}"

    @property
    def mr(self) -> str:
        """The mobile router's namespace."""
        return f"mnt-mr-{self.tag}"

    def build(self) -> None:
        """Create the namespaces, the veth (unique ifindexes) and the addresses (no DAD)."""
        self.destroy()
        netns.create(self.ha)
        netns.create(self.mr)
        base = 1000 + int(self.tag[:4], 16) % 50000 * 2
        netns.veth(self.mr, "mr0", self.ha, "ha0", base)
        netns.run(self.ha, ["ip", "-6", "addr", "add", f"{HA_ADDRESS}/64", "dev", "ha0", "nodad"])
        for coa in (COA1, COA2):
            netns.run(self.mr, ["ip", "-6", "addr", "add", f"{coa}/64", "dev", "mr0", "nodad"])

    def destroy(self) -> None:
        """Remove both namespaces (missing ones are fine)."""
        netns.delete(self.mr)
        netns.delete(self.ha)


class Signaller:
    """Sends real BUs from the MR's care-of addresses and BAs from the HA."""

    def __init__(self, lab: MobilityLab) -> None:
        self._mr = {coa: raw_socket_in(lab.mr, coa) for coa in (COA1, COA2)}
        self._ha = raw_socket_in(lab.ha, HA_ADDRESS)

    def send_bu(
        self, coa: IPv6Address, sequence: int, lifetime: int, *bids: int, mnp: bool = True
    ) -> float:
        """A BU from `coa` for `bids` (each without its own CoA); returns the send time."""
        options = (MobileNetworkPrefix(MNP.network_address, 64),) if mnp else ()
        message = BindingUpdate(
            sequence=sequence,
            lifetime=lifetime,
            ack=True,
            home_registration=True,
            mobile_router=True,
            options=(*options, *(BindingIdentifier(bid) for bid in bids)),
        )
        sent = time.time()
        self._mr[coa].sendto(encode(message), (str(HA_ADDRESS), 0))
        return sent

    def send_ba(self, coa: IPv6Address, sequence: int, lifetime: int, status: int = 0) -> float:
        """A BA from the HA to `coa`; returns the send time."""
        message = BindingAcknowledgement(
            status=status, sequence=sequence, lifetime=lifetime, mobile_router=True
        )
        sent = time.time()
        self._ha.sendto(encode(message), (str(coa), 0))
        return sent

    def close(self) -> None:
        """Close every socket."""
        for sock in (*self._mr.values(), self._ha):
            sock.close()


@dataclass(frozen=True)
class Arrival:
    """An event as received from the broker, with its arrival time (time.time())."""

    at: float
    topic: str
    event: BindingEvent


class EventListener:
    """Subscribes to every binding event and to the service's presence under one root."""

    def __init__(self, broker: BrokerSettings) -> None:
        self.topics = Topics(broker.topic_root)
        self.events: queue.Queue[Arrival] = queue.Queue()
        self.presences: queue.Queue[Presence] = queue.Queue()
        self.client = bus.make_client(broker, f"mobility-listener-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self._subscribed = threading.Event()
        self.client.on_subscribe = lambda *_args: self._subscribed.set()
        bus.start(self.client, broker)
        if not self._subscribed.wait(10):
            raise TimeoutError("listener could not subscribe")

    def wait_online(self, node: str, timeout_s: float = 20.0) -> None:
        """Wait for the service's hello (raises TimeoutError)."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                presence = self.presences.get(timeout=left)
            except queue.Empty:
                break
            if presence.node == node and presence.online:
                return
        raise TimeoutError(f"{node} did not come online within {timeout_s} s")

    def next(self, timeout_s: float = 5.0) -> Arrival:
        """The next binding event (raises queue.Empty after `timeout_s`)."""
        return self.events.get(timeout=timeout_s)

    def wait_for(self, kind: BindingEventKind, bid: int, timeout_s: float = 5.0) -> Arrival:
        """The next event of `kind` for `bid`, skipping others; AssertionError names what came."""
        deadline = time.monotonic() + timeout_s
        seen = []
        while (left := deadline - time.monotonic()) > 0:
            try:
                arrival = self.next(timeout_s=left)
            except queue.Empty:
                break
            if arrival.event.event is kind and arrival.event.bid == bid:
                return arrival
            seen.append((arrival.event.event.value, arrival.event.bid))
        raise AssertionError(
            f"no {kind.value} event for BID {bid} within {timeout_s} s; saw {seen}"
        )

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: object,
        props: object,
    ) -> None:
        client.subscribe([(self.topics.binding_events(), 1), (self.topics.presences(), 1)])

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        at = time.time()
        name = self.topics.parse(msg.topic)
        try:
            if name is None:
                return
            if name.kind is TopicKind.PRESENCE:
                self.presences.put(decode(Presence, bytes(msg.payload)))
            elif name.kind is TopicKind.BINDING_EVENT:
                self.events.put(Arrival(at, msg.topic, decode(BindingEvent, bytes(msg.payload))))
        except ValidationError:
            return


def write_config(workdir: Path, topic_root: str, *, tick_interval_s: float = 0.2) -> Path:
    """The service's settings file for the lab's HA."""
    config = workdir / "mobility.toml"
    config.write_text(
        "[mobility_events]\n"
        f'node = "{HA_NODE}"\n'
        f"tick_interval_s = {tick_interval_s}\n"
        f'mobile_routers = [{{ id = "{MR_ID}", prefixes = ["{MNP}"] }}]\n'
        "[broker]\n"
        f'topic_root = "{topic_root}"\n'
        "session_expiry_s = 60\n",
        encoding="utf-8",
    )
    return config


@contextmanager
def service_process(config: Path, netns_name: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The real service, its own process, capturing in `netns_name`; stopped with SIGTERM."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "services.cli",
                "mobility-events",
                "--config",
                str(config),
                "--netns",
                netns_name,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            yield proc
        finally:
            stop(proc)
