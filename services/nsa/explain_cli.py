"""`multinet nsa explain MR`: the current reasoning for one mobile router, from the bus.

It reads the retained decision on `mr/<mr>/decision`, which the replica owning the router
publishes after every decision, so it works against a running NSA without asking it anything
(and whichever replica owns the router). Only the `[broker]` table of the settings file is
used, so the operator's copy of the NSA's file (or any file with that table) works.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
from pydantic import ValidationError

from services import bus
from services.contracts.errors import InvalidInput
from services.contracts.messages import decode
from services.contracts.settings import BrokerSettings, apply_env, read_file, validate_section
from services.contracts.topics import Topics
from services.nsa.core.documents import DecisionRecord
from services.nsa.core.explain import render


def fetch(broker: BrokerSettings, mobile_router: str, timeout_s: float) -> bytes | None:
    """The retained decision payload of `mobile_router`, or None within `timeout_s`."""
    topic = Topics(broker.topic_root).decision(mobile_router)
    found: list[bytes] = []
    arrived = threading.Event()
    client = bus.make_client(
        broker.model_copy(update={"session_expiry_s": 0}),
        f"nsa-explain-{uuid.uuid4().hex[:12]}",
    )

    def on_connect(c: mqtt.Client, *_: object) -> None:
        c.subscribe(topic, qos=1)

    def on_message(c: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if msg.payload and not found:
            found.append(bytes(msg.payload))
            arrived.set()

    client.on_connect = on_connect
    client.on_message = on_message
    started = time.monotonic()
    bus.start(client, broker, timeout_s=timeout_s)
    try:
        arrived.wait(max(0.0, timeout_s - (time.monotonic() - started)))
    finally:
        client.disconnect()
        client.loop_stop()
    return found[0] if found else None


def explain(path: Path, mobile_router: str, *, timeout_s: float = 3.0) -> int:
    """Print the current reasoning; 1 when there is none within the timeout, 2 on bad input."""
    try:
        broker = validate_section(BrokerSettings, apply_env(read_file(path)), "broker")
        topic = Topics(broker.topic_root).decision(mobile_router)
    except InvalidInput as exc:
        for problem in exc.problems:
            print(f"{path}: {problem}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"mobile router {mobile_router!r}: {exc}", file=sys.stderr)
        return 2
    payload = fetch(broker, mobile_router, timeout_s)
    if payload is None:
        print(
            f"no decision for mobile router {mobile_router} on {topic} within {timeout_s:g} s "
            f"(broker {broker.host}:{broker.port}): is an NSA replica deciding for it?",
            file=sys.stderr,
        )
        return 1
    try:
        record = decode(DecisionRecord, payload)
    except ValidationError as exc:
        print(f"the decision on {topic} does not validate: {exc}", file=sys.stderr)
        return 1
    when = datetime.fromtimestamp(record.explanation.at, UTC).isoformat(timespec="seconds")
    print(f"decided by NSA replica {record.sender} (index {record.replica}) at {when}")
    print(render(record.explanation))
    for budget in record.budgets:
        ends = ""
        if budget.period_end is not None:
            ends = ", period ends " + datetime.fromtimestamp(budget.period_end, UTC).isoformat(
                timespec="minutes"
            )
        print(f"  budget BID {budget.bid}: {budget.state}{ends}")
    return 0
