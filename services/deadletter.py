"""Dead letters: the one way out for an input whose handling raised where it should have answered.

Every service answers its inputs: applied, or refused naming the field and why. An exception
that escapes anyway is the input's fault until proven otherwise, and it must not end the
service: on a QoS 1 subscription the broker would redeliver the same input at every restart,
and the node would be stuck behind it for good. So each service wraps the handling of one
input in `try ... except Exception` and hands what escaped to its `DeadLetters`, which

- publishes a `DeadLetter` (the reason, the exception's type, the payload's size, digest and
  head) on `Topics.dead_letter(node, service)`, QoS 1, not retained;
- counts it in `multinet_dead_letters_total{input}` on the service's metrics;
- logs it with the node, the source and the traceback;

and the service acknowledges the input and goes on with the next one. Nothing here raises: a
dead letter that cannot be published is still logged and counted.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time

import paho.mqtt.client as mqtt
from prometheus_client import Counter

from services.contracts.echo import echo
from services.contracts.messages import DeadLetter, encode
from services.contracts.topics import Topics

log = logging.getLogger(__name__)

#: Bytes of the payload a dead letter carries (base64): enough to reproduce a small input.
HEAD_BYTES = 1024


def dead_letter(
    node: str,
    service: str,
    *,
    source: str,
    input_kind: str,
    payload: bytes,
    error: BaseException,
    now: float | None = None,
) -> DeadLetter:
    """The message for one input `error` escaped from (every text echoed, so it validates)."""
    return DeadLetter(
        sender=node,
        timestamp=time.time() if now is None else now,
        node=node,
        service=service,
        source=source,
        input=input_kind,
        error=type(error).__name__,
        reason=describe(error),
        payload_bytes=len(payload),
        payload_sha256=hashlib.sha256(payload).hexdigest(),
        payload_head=base64.b64encode(payload[:HEAD_BYTES]).decode("ascii"),
    )


def describe(error: BaseException) -> str:
    """The exception's message (its type when it has none, or when even that fails)."""
    try:
        return str(error) or type(error).__name__
    except Exception:
        return type(error).__name__


class DeadLetters:
    """One service's dead-letter topic, counter and log (see the module docstring)."""

    def __init__(
        self,
        client: mqtt.Client,
        topics: Topics,
        node: str,
        service: str,
        counter: Counter,
    ) -> None:
        self.client = client
        self.node = node
        self.service = service
        self.topic = topics.dead_letter(node, service)
        self.counter = counter
        self.sent = 0

    def post(
        self, *, source: str, input_kind: str, payload: bytes, error: BaseException
    ) -> DeadLetter | None:
        """Set one input aside: publish, count, log. Never raises; None if even building the
        dead letter failed (then it is still counted and logged)."""
        self.counter.labels(input_kind).inc()
        self.sent += 1
        log.error(
            "node %s: %s input from %s set aside as a dead letter on %s: %s: %s",
            self.node,
            input_kind,
            echo(source, 200),
            self.topic,
            type(error).__name__,
            echo(describe(error)),
            exc_info=error,
        )
        try:
            letter = dead_letter(
                self.node,
                self.service,
                source=source,
                input_kind=input_kind,
                payload=payload,
                error=error,
            )
            info = self.client.publish(self.topic, encode(letter), qos=1)
        except Exception:
            log.exception("node %s: the dead letter itself could not be sent", self.node)
            return None
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning(
                "node %s: dead letter not published: %s", self.node, mqtt.error_string(info.rc)
            )
        return letter
