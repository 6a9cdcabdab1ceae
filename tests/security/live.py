"""A live PREM worker for the security battery: a real process enforcing with nftables in a
namespace of its own, on the real broker under a topic root of its own.

Beside the worker's own state, the namespace holds a sentinel: an nftables table and an ip rule
per family that belong to somebody else. Every case snapshots the namespace's whole ruleset and
rules (read with `nft` and `ip`, not through the worker) before and after, so "nothing
changed" and "nothing else was touched" are both checked by an independent reader.
"""

from __future__ import annotations

import json
import queue
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from pydantic import ValidationError

from services import bus, netns
from services.contracts import policy_xml
from services.contracts.messages import DeadLetter, PolicyStatus, decode
from services.contracts.policy import Install, Policy
from services.contracts.settings import BrokerSettings
from services.contracts.topics import Topics
from services.prem.client import PolicyClient
from services.prem.readback import expected_entries, read_table
from tests.faults.procs import Service
from tests.observability.scrape import scrape
from tests.prem.factories import message, udp_to

NODE = "ha1"
STATUS_TIMEOUT_S = 20.0
SENTINEL_TABLE = "sentinel"
SENTINEL_PRIORITY = "777"

#: Two valid policy sets the cases alternate between, so that each "a later valid document
#: still applies" really changes the kernel.
VALID_SETS: tuple[tuple[Policy, ...], tuple[Policy, ...]] = (
    (udp_to("video", 5001, 2, fallbacks=(1,)), udp_to("voice", 5002, 1)),
    (udp_to("video", 5001, 1), udp_to("web", 8080, 2), udp_to("bulk", 9000, None)),
)


def add_sentinel(namespace: str) -> None:
    """Somebody else's nftables table and policy-routing rules in the node's namespace."""
    table = ["inet", SENTINEL_TABLE]
    netns.run(namespace, ["nft", "add", "table", *table])
    chain = "{ type filter hook prerouting priority 0; }"
    netns.run(namespace, ["nft", "add", "chain", *table, "pre", chain])
    rule = ["meta", "mark", "0x00abc000", "counter", "accept"]
    netns.run(namespace, ["nft", "add", "rule", *table, "pre", *rule])
    for family in ("-4", "-6"):
        argv = ["ip", family, "rule", "add", "priority", SENTINEL_PRIORITY, "fwmark", "0x7"]
        netns.run(namespace, [*argv, "lookup", "777"])


@dataclass(frozen=True)
class Snapshot:
    """The namespace's netfilter ruleset and policy-routing rules and routes, as listed."""

    ruleset: tuple[str, ...]
    rules: str
    routes: str

    def sentinel(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Only what belongs to the sentinel: its table's objects and its rules."""
        objects = tuple(r for r in self.ruleset if f'"table": "{SENTINEL_TABLE}"' in r)
        rules = tuple(
            line for line in self.rules.splitlines() if line.startswith(f"{SENTINEL_PRIORITY}:")
        )
        return objects, rules


def snapshot(namespace: str) -> Snapshot:
    """Read everything with `nft -j` and `ip`."""
    listing: dict[str, Any] = json.loads(netns.run(namespace, ["nft", "-j", "list", "ruleset"]))
    ruleset = tuple(
        json.dumps(item, sort_keys=True) for item in listing["nftables"] if "metainfo" not in item
    )
    rules = "".join(netns.run(namespace, ["ip", f, "rule", "show"]) for f in ("-4", "-6"))
    # Sorted, and without the routes the kernel makes for addresses (`proto kernel`): those
    # come and go on the kernel's own timetable (a link-local address finishing its set-up
    # between two reads) and are never the worker's; and routes of equal standing may be
    # listed in another order by two reads of the same state.
    listed = [
        line
        for f in ("-4", "-6")
        for line in netns.run(namespace, ["ip", f, "route", "show", "table", "all"]).splitlines()
        if "proto kernel" not in line
    ]
    routes = "".join(line + "\n" for line in sorted(listed))
    return Snapshot(ruleset, rules, routes)


class LetterBox:
    """Subscribes to every dead letter under a topic root."""

    def __init__(self, broker: BrokerSettings) -> None:
        self.letters: queue.Queue[DeadLetter] = queue.Queue()
        self.client = bus.make_client(broker, f"letters-{uuid.uuid4().hex[:8]}")
        self.client.on_message = self._on_message
        topic = f"{broker.topic_root}/node/+/dead-letter/+"
        subscribed = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        bus.start(self.client, broker)
        if not subscribed.wait(10):
            raise TimeoutError("cannot subscribe to the dead letters")

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            self.letters.put(decode(DeadLetter, bytes(msg.payload)))
        except ValidationError:
            return

    def next(self, timeout_s: float = STATUS_TIMEOUT_S) -> DeadLetter:
        """The next dead letter (queue.Empty after the timeout)."""
        return self.letters.get(timeout=timeout_s)

    def drain(self) -> list[DeadLetter]:
        """Every dead letter received so far."""
        found = []
        while not self.letters.empty():
            found.append(self.letters.get_nowait())
        return found

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class LiveNode:
    """One running worker and the means to talk to it and to read its kernel."""

    namespace: str
    worker: Service
    client: PolicyClient
    letters: LetterBox
    state_dir: Path
    metrics_port: int
    version: int = 0
    applied: tuple[Policy, ...] = ()
    _turn: int = field(default=0)

    @property
    def topics(self) -> Topics:
        """The node's topics (under the battery's own root)."""
        return self.client.topics

    def next_version(self) -> int:
        """A version above the enforced one: a refusal of it is never for staleness."""
        return self.version + 1

    def send(self, payload: bytes, *, retain: bool = False) -> PolicyStatus:
        """Publish one document and return the worker's answer to it."""
        self.client.watch(NODE)
        info = self.client.client.publish(self.topics.policy(NODE), payload, qos=1, retain=retain)
        info.wait_for_publish(STATUS_TIMEOUT_S)
        status = self.client.next_status(NODE, timeout_s=STATUS_TIMEOUT_S)
        if status.result == "applied":
            self.version = status.version
        return status

    def apply_valid(self) -> PolicyStatus:
        """Install the next valid set; it must apply, and the kernel must show it."""
        policies = VALID_SETS[self._turn % 2]
        self._turn += 1
        status = self.send(
            policy_xml.render(message(self.next_version(), Install(policies=policies)))
        )
        assert status.result == "applied", status
        assert read_table(self.namespace).by_policy() == expected_entries(policies)
        self.applied = policies
        return status

    def log_tail(self) -> str:
        """The end of the worker's log, for failure messages."""
        return self.worker.text()[-4000:]

    def metric(self, name: str, **labels: str) -> float:
        """One sample of the worker's metrics endpoint (0 when absent)."""
        return scrape(self.metrics_port).get(name, **labels) or 0.0


@contextmanager
def state_dir_replaced(node: LiveNode) -> Iterator[Path]:
    """The worker's state directory replaced by a plain file (restored afterwards), so that
    storing the state fails after the kernel batch committed: a fault at the filesystem seam."""
    away = node.state_dir.with_name("state.away")
    node.state_dir.rename(away)
    node.state_dir.write_text("not a directory\n", encoding="utf-8")
    try:
        yield node.state_dir
    finally:
        node.state_dir.unlink()
        away.rename(node.state_dir)
