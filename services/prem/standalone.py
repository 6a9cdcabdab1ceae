"""Standalone mode: one PREM daemon per node that serves the SOAP service itself, no broker.

The paper's deployment: each node (an HA or an MR) runs one daemon that takes SOAP calls and
enforces them in its own kernel. The SOAP stack is the gateway's, used as a library
(`services.soap_gateway.api`: same WSDL, WSGI guard, faults, authentication, optional SOAP over
UDP); only the delivery differs. `StandaloneWorker` is the SOAP transport of a PREM node
(`node.PremNode` runs the node's life cycle, as for the MQTT worker): a validated document goes
into the node's one bounded work queue, the main thread (the only one that calls the
`Enforcer`, inside the node's namespace) applies it and hands the status straight to the
tracker, which answers the waiting call.

How the two-document operations map here. The daemon is one node of one mobile router (its
`[prem]` settings: `node`, `role`, `mobile_router`) and a call carries only that node's part:

- an HA's daemon takes the downlink document in `downlink`; a non-empty `uplink` is refused
  (`Client.NodeMismatch`): the MR's own daemon takes it;
- an MR's daemon takes the uplink document in `uplink`; `downlink` must be sent empty (the
  WSDL requires the element) and a non-empty one is refused the same way;
- a symmetric (scheme 2) document is refused (`Client.SchemeConflict`): with no bus there is
  nobody to forward the mirrored uplink set to; send each node its own document;
- the answer and GetStatus hold one row, this node's.

Everything else is checked as the gateway checks it (document, operation, node, mobile
router, direction) before anything reaches the enforcer, and the enforcer refuses a stale
version with its reasons.

Callers authenticate as at the gateway (HTTP Basic, the same `callers` table, failed logins
throttled), from the `[standalone]` table of the worker's settings file
(`api.StandaloneSoapSettings`), with optional TLS. Without callers anyone who reaches the
daemon may change its node's policies, and it says so loudly when it starts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from services.contracts import policy_xml
from services.contracts.errors import PolicyDocumentError, Problem
from services.contracts.messages import PolicyStatus, Presence
from services.prem.config import PremSettings
from services.prem.core.settings import Role
from services.prem.enforcer import Enforcer
from services.prem.metrics import PremMetrics
from services.prem.node import PremNode
from services.soap_gateway.api import (
    BusUnavailableError,
    Caller,
    CallRefused,
    Delivery,
    FaultCode,
    GatewaySettings,
    NodeOutcome,
    NodeState,
    PartProblem,
    SoapServer,
    StandaloneSoapSettings,
    Tracker,
    access_warnings,
    authorise,
    node_outcome,
    quiet_client_faults,
)

log = logging.getLogger(__name__)
QUEUE_SIZE = 64
#: The node id recorded for the other node of the mobile router, which a standalone daemon
#: neither knows nor addresses (GatewaySettings wants both).
UNKNOWN_PEER = "-"


def standalone_settings(
    prem: PremSettings,
    host: str,
    port: int,
    *,
    udp_port: int | None = None,
    soap: StandaloneSoapSettings | None = None,
) -> GatewaySettings:
    """Gateway settings for a daemon serving only `prem`'s node, limits taken from `prem`,
    callers and TLS from `soap` (the `[standalone]` table)."""
    soap = soap or StandaloneSoapSettings()
    own, peer = prem.node, prem.peer_node or UNKNOWN_PEER
    ha, mr = (own, peer) if prem.role is Role.HA else (peer, own)
    return GatewaySettings.model_validate(
        {
            "name": prem.node,
            "host": host,
            "port": port,
            "udp_port": udp_port,
            # The document travels escaped inside the envelope, so the body may be larger.
            "max_body_bytes": min(64 * 1024 * 1024, 2 * prem.limits.max_document_bytes),
            "max_policies": prem.limits.max_policies,
            "mobile_routers": [{"id": prem.mobile_router, "ha_node": ha, "mr_node": mr}],
            "callers": soap.callers,
            "tls_cert": soap.tls_cert,
            "tls_key": soap.tls_key,
        }
    )


def _refused(code: FaultCode, part: str, reason: str, field: str | None = None) -> CallRefused:
    return CallRefused(code, [PartProblem(part, Problem(reason, field=field))])


def check_local_call(
    prem: PremSettings,
    operation: str,
    mobile_router: str | None,
    downlink: str | None,
    uplink: str | None,
) -> Delivery:
    """Validate a call for this node only; return its one delivery or raise `CallRefused`."""
    if mobile_router != prem.mobile_router:
        raise _refused(
            FaultCode.UNKNOWN_MOBILE_ROUTER,
            "mobile_router",
            f"mobile router {mobile_router!r} is not served by this node "
            f"({prem.node} serves {prem.mobile_router!r})",
        )
    own, other = ("downlink", "uplink") if prem.role is Role.HA else ("uplink", "downlink")
    texts = {"downlink": downlink, "uplink": uplink}
    other_text = texts[other]
    if other_text and other_text.strip():
        peer = "MR" if prem.role is Role.HA else "HA"
        raise _refused(
            FaultCode.NODE_MISMATCH,
            other,
            f"node {prem.node} ({prem.role.value.upper()}) enforces only the {own} set: send "
            f"the {other} document to the {peer}'s own daemon and leave this part empty",
        )
    text = texts[own]
    if not text or not text.strip():
        raise _refused(FaultCode.MISSING_PART, own, "the document is missing or empty")
    data = text.encode("utf-8")
    try:
        message = policy_xml.parse(
            data,
            max_bytes=prem.limits.max_document_bytes,
            max_policies=prem.limits.max_policies,
        )
    except PolicyDocumentError as exc:
        raise CallRefused(
            FaultCode.INVALID_DOCUMENT, [PartProblem(own, p) for p in exc.problems]
        ) from exc
    if message.symmetric:
        raise _refused(
            FaultCode.SCHEME_CONFLICT,
            own,
            "a standalone node has no bus to forward the mirrored uplink set of a symmetric "
            "document (scheme 2): send each node its own document",
            "symmetric",
        )
    if message.operation.kind != operation:
        raise _refused(
            FaultCode.OPERATION_MISMATCH,
            own,
            f"a {operation} call carries a <{message.operation.kind}> document",
            "operation",
        )
    expected = (
        ("node", message.node, prem.node),
        ("mobile-router", message.mobile_router, prem.mobile_router),
        ("direction", message.direction.value, prem.direction.value),
    )
    misaddressed = [
        PartProblem(own, Problem(f"is {got!r}, expected {want!r}", field=name))
        for name, got, want in expected
        if got != want
    ]
    if misaddressed:
        raise CallRefused(FaultCode.NODE_MISMATCH, misaddressed)
    return Delivery(prem.node, prem.direction, message.version, data)


class _Queue(Protocol):
    """Where the SOAP threads hand documents to the node's main loop."""

    def enforcing(self) -> bool:
        """Whether the main loop takes documents."""
        ...

    def offer(self, document: _Document) -> bool:
        """Queue `document`; False when it cannot be taken now."""
        ...


@dataclass(frozen=True)
class LocalCalls:
    """The SOAP calls of one node (`api.SoapCalls`): one document per call, one status row per
    answer; safe from many threads. `node` takes the documents."""

    prem: PremSettings
    settings: GatewaySettings
    tracker: Tracker
    node: _Queue

    def deliver(
        self,
        operation: str,
        mobile_router: str | None,
        downlink: str | None,
        uplink: str | None,
        *,
        caller: Caller | None = None,
    ) -> tuple[NodeOutcome, ...]:
        """Validate this node's document, apply it through the enforcer, answer its status."""
        authorise(self.settings, caller, mobile_router)
        delivery = check_local_call(self.prem, operation, mobile_router, downlink, uplink)
        if not self.node.enforcing():
            raise BusUnavailableError(f"node {self.prem.node} is not enforcing (stopping?)")
        assert delivery.document is not None
        ticket = self.tracker.expect(delivery.node, delivery.version)
        if self.node.offer(_Document(delivery.document)):
            self.tracker.wait([ticket], self.settings.ack_deadline_s)
        else:
            self.tracker.cancel([ticket])
        return (node_outcome(delivery, ticket.status),)

    def status(
        self, mobile_router: str | None, *, caller: Caller | None = None
    ) -> tuple[NodeState, ...]:
        """This node's state (the one row of GetStatus)."""
        authorise(self.settings, caller, mobile_router)
        if mobile_router != self.prem.mobile_router:
            raise _refused(
                FaultCode.UNKNOWN_MOBILE_ROUTER,
                "mobile_router",
                f"mobile router {mobile_router!r} is not served by this node",
            )
        return (NodeState(self.prem.direction, self.tracker.view(self.prem.node)),)


@dataclass(frozen=True)
class _Document:
    payload: bytes


class StandaloneWorker:
    """One node's daemon: SOAP (HTTP, optionally UDP) in, the node's kernel enforced.

    Sockets are opened in the namespace the daemon starts in (the management side); with
    `netns_name`, the main thread then enters the node's namespace, where the enforcer, the
    routing rules and the link watcher live, like `PremWorker`.
    """

    def __init__(
        self, prem: PremSettings, settings: GatewaySettings, *, netns_name: str | None = None
    ) -> None:
        self.prem = prem
        self.settings = settings
        self.tracker = Tracker()
        self.metrics = PremMetrics(prem.node)
        self.node = PremNode(prem, self, self.metrics, netns_name=netns_name, queue_size=QUEUE_SIZE)
        self.calls = LocalCalls(prem, settings, self.tracker, self)
        self.soap = SoapServer(settings, self.calls, name=prem.node)
        self._enforcing = threading.Event()

    @property
    def port(self) -> int:
        """The HTTP port actually bound."""
        return self.soap.port

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT (main thread only), then stop cleanly."""
        quiet_client_faults()
        self.node.run()

    def stop(self) -> None:
        """Ask the main loop to finish (thread-safe)."""
        self.node.stop()

    # What the SOAP threads call (`_Queue`).

    def enforcing(self) -> bool:
        """Whether the main loop is taking documents."""
        return self._enforcing.is_set()

    def offer(self, document: _Document) -> bool:
        """Queue `document` for the main loop; False when stopping or the queue is full."""
        if not self._enforcing.is_set():
            return False
        if not self.node.offer(document):
            log.warning("node %s: work queue full, a SOAP call is not applied", self.prem.node)
            return False
        return True

    # The node's transport (node.Transport), called from the main thread.

    def open(self) -> None:
        """The SOAP sockets, then the metrics endpoint, on the management side."""
        for warning in access_warnings(
            self.settings, tls=self.soap.tls, what=f"node {self.prem.node} (standalone SOAP)"
        ):
            log.warning("%s", warning)
        self.soap.bind()
        self.metrics.serve(self.prem.metrics_listen)

    def serve(self, enforcer: Enforcer) -> None:
        """Take calls: the tracker knows the version enforced, then the servers start."""
        self.tracker.on_presence(
            Presence(
                sender=self.prem.node,
                node=self.prem.node,
                service="prem",
                online=True,
                version=enforcer.state.version,
            )
        )
        self._enforcing.set()
        self.soap.start()
        log.info(
            "node %s: standalone, serving SOAP on %s (WSDL at ?wsdl)", self.prem.node, self.soap.url
        )

    def handle(self, enforcer: Enforcer, document: _Document) -> PolicyStatus:
        """Apply or refuse one document; the status answers the waiting call."""
        status = enforcer.handle_document(document.payload)
        self.tracker.on_status(status)
        return status

    def set_aside(self, document: _Document, error: Exception) -> str:
        """Logged with its traceback (there is no bus to set it aside on)."""
        log.error(
            "node %s: a %d-byte document could not be handled; set aside in this log",
            self.prem.node,
            len(document.payload),
            exc_info=error,
        )
        return "the daemon's log"

    def on_status(self, status: PolicyStatus) -> None:
        """A fallback or recovery status: what GetStatus reports next."""
        self.tracker.on_status(status)

    def stopping(self, drain: Callable[[], None]) -> None:
        """No more calls; the documents already queued were promised to their callers: apply
        them, then stop the servers."""
        self._enforcing.clear()
        drain()
        self.soap.stop()

    def close(self) -> None:
        """The metrics endpoint."""
        self.metrics.close()
