"""What the soak benchmark does to the services: policy churn, carrier flaps, BU/BA signalling.

Each driver has one `step`-like method the soak's scheduler calls on time; none keeps a thread.
The policy churn also keeps the desired set the HA must end with, from the answers it got.
"""

from __future__ import annotations

import http.client
import itertools
import random
from collections.abc import Iterable
from xml.sax.saxutils import escape

from lxml import etree

from bench.soakbed import Bed
from labs.mobility_events import COA1, COA2, Signaller
from services import netns
from services.contracts import policy_xml
from services.contracts.policy import (
    Direction,
    Forward,
    Install,
    Operation,
    Policy,
    PolicyMessage,
    PortRange,
    Selector,
    Update,
)

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
GW = "urn:multinet:soap-gateway:1"
FIRST_PORT = 20000
NUMBERS = 40000


def _policy(number: int, bid: int) -> Policy:
    """UDP to port FIRST_PORT + number, to `bid` with the other BID as fallback.

    Numbers wrap at NUMBERS: a set lives for at most four calls, far fewer than NUMBERS new
    policies, so ids and ports stay unique within every set.
    """
    number %= NUMBERS
    port = FIRST_PORT + number
    return Policy(
        id=f"p{number}",
        priority=10 + number % 50,
        selector=Selector(next_header=17, dst_port=PortRange(first=port, last=port)),
        action=Forward(bid=bid, fallbacks=(3 - bid,)),
    )


class Churn:
    """One SOAP call per step for both nodes of mr1: Install every fourth, Update otherwise."""

    def __init__(self, bed: Bed, size: int, rng: random.Random) -> None:
        self.bed = bed
        self.size = size
        self.rng = rng
        self.version = 0
        self.enforced = 0
        self.desired: tuple[Policy, ...] = ()
        self.calls = 0
        self.failed = 0
        self._numbers = itertools.count()
        self._conn: http.client.HTTPConnection | None = None

    def step(self) -> None:
        """Deliver the next change; remember the set when both workers applied it."""
        self.version += 1
        kind, operation, after = self._next()
        outcomes = self._call(kind, operation)
        self.calls += 1
        if outcomes == {"ha1": "applied", "mr1": "applied"}:
            self.desired, self.enforced = after, self.version
            return
        self.failed += 1
        print(f"  call {self.version} ({kind}): {outcomes}", flush=True)

    def _next(self) -> tuple[str, Operation, tuple[Policy, ...]]:
        current = {p.id: p for p in self.desired}
        if self.version % 4 == 1 or len(current) < 8:
            fresh = [
                _policy(next(self._numbers), self.rng.choice((1, 2))) for _ in range(self.size)
            ]
            return "Install", Install(policies=tuple(fresh)), _sorted(fresh)
        ids = self.rng.sample(sorted(current), 6)
        replaced = []
        for policy_id in ids[:5]:
            old = current[policy_id]
            assert isinstance(old.action, Forward)
            flipped = 3 - old.action.bid
            replaced.append(_policy(int(policy_id[1:]), flipped))
        deleted = ids[5]
        inserted = _policy(next(self._numbers), self.rng.choice((1, 2)))
        for policy in replaced:
            current[policy.id] = policy
        del current[deleted]
        current[inserted.id] = inserted
        update = Update(insert=(inserted,), delete=(deleted,), replace=tuple(replaced))
        return "Update", update, _sorted(current.values())

    def _call(self, kind: str, operation: Operation) -> dict[str, str]:
        parts = {"mobile_router": "mr1"}
        for part, node, direction in (
            ("downlink", "ha1", Direction.DOWNLINK),
            ("uplink", "mr1", Direction.UPLINK),
        ):
            message = PolicyMessage(
                node=node,
                mobile_router="mr1",
                direction=direction,
                version=self.version,
                operation=operation,
            )
            parts[part] = policy_xml.render(message).decode()
        inner = "".join(f"<g:{k}>{escape(v)}</g:{k}>" for k, v in parts.items())
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<soap:Envelope xmlns:soap="{SOAP_ENV}" '
            f'xmlns:g="{GW}"><soap:Body><g:{kind}>{inner}</g:{kind}></soap:Body></soap:Envelope>'
        ).encode()
        try:
            answer = self._post(kind, body)
        except (OSError, http.client.HTTPException) as exc:
            self._conn = None
            return {"error": str(exc)}
        root = etree.fromstring(answer)
        return {
            str(row.findtext(f"{{{GW}}}node")): str(row.findtext(f"{{{GW}}}outcome"))
            for row in root.iter(f"{{{GW}}}NodeResult")
        } or {"fault": str(root.findtext(".//faultstring"))}

    def _post(self, kind: str, body: bytes) -> bytes:
        if self._conn is None:
            self._conn = http.client.HTTPConnection("127.0.0.1", self.bed.soap_port, timeout=60)
        headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{kind}"'}
        self._conn.request("POST", "/", body, headers)
        return self._conn.getresponse().read()


def _sorted(policies: Iterable[Policy]) -> tuple[Policy, ...]:
    return tuple(sorted(policies, key=Policy.sort_key))


class Flapper:
    """Takes the HA's BID 2 link and the monitor's second link down, then up, alternately."""

    def __init__(self, bed: Bed) -> None:
        self.bed = bed
        self.down = False
        self.flaps = 0

    def toggle(self) -> None:
        """Flip both links."""
        self._set(up=self.down)
        if self.down:
            self.flaps += 1

    def restore(self) -> None:
        """Both links up."""
        if self.down:
            self._set(up=True)

    def _set(self, *, up: bool) -> None:
        state = "up" if up else "down"
        netns.run(self.bed.prem_lab.receiver, ["ip", "link", "set", "d2", state])
        self.bed.monitor_lab.set_peer(1, up=up)
        self.down = not up


class Signalling:
    """A BU and its BA for BID 1 each step; the care-of address changes every tenth step."""

    def __init__(self, bed: Bed) -> None:
        self.signaller = Signaller(bed.mobility_lab)
        self.sequence = 0
        self.sent = 0

    def step(self) -> None:
        """One exchange (a refresh, or a CoA change)."""
        self.sequence = (self.sequence + 1) % 65536
        coa = COA1 if (self.sequence // 10) % 2 == 0 else COA2
        self.signaller.send_bu(coa, self.sequence, 10, 1)
        self.signaller.send_ba(coa, self.sequence, 10)
        self.sent += 1

    def close(self) -> None:
        """Close the raw sockets."""
        self.signaller.close()
