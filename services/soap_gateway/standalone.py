"""Standalone mode: one PREM daemon per node that serves the SOAP service itself, no broker.

The paper's deployment: each node (an HA or an MR) runs one daemon that takes SOAP calls and
enforces them in its own kernel. The SOAP stack is the gateway's (same WSDL, WSGI guard,
faults, optional SOAP over UDP); only the delivery differs. `StandaloneWorker` is the
`Publisher`: a validated document goes into the daemon's one bounded work queue, the main
thread (the only one that calls the `Enforcer`, inside the node's namespace) applies it and
hands the status straight to the tracker, which answers the waiting call.

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
(`config.StandaloneSoapSettings`), with optional TLS. Without callers anyone who reaches the
daemon may change its node's policies, and it says so loudly when it starts.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
from dataclasses import dataclass
from types import FrameType
from typing import Any

from cheroot import wsgi

from services import netns
from services.contracts import policy_xml
from services.contracts.errors import MultinetError, PolicyDocumentError, Problem
from services.contracts.messages import PolicyStatus, Presence, Refusal
from services.prem import routing
from services.prem.config import PremSettings
from services.prem.core.settings import Role
from services.prem.enforcer import Enforcer
from services.prem.linkwatch import LinkWatcher
from services.prem.metrics import PremMetrics
from services.prem.node import Fatal, Stop, Usability, start_enforcement
from services.soap_gateway.auth import Caller
from services.soap_gateway.checks import CallRefused, Delivery, FaultCode, PartProblem
from services.soap_gateway.config import GatewaySettings, StandaloneSoapSettings, access_warnings
from services.soap_gateway.core import (
    BusUnavailableError,
    GatewayCore,
    NodeOutcome,
    NodeState,
    Outcome,
    Publisher,
)
from services.soap_gateway.server import ssl_adapter
from services.soap_gateway.tracker import Tracker
from services.soap_gateway.udp import UdpServer
from services.soap_gateway.wsgi import make_wsgi_app

log = logging.getLogger(__name__)
QUEUE_SIZE = 64
#: The node id recorded for the other node of the mobile router, which a standalone daemon
#: neither knows nor addresses (GatewaySettings wants both).
UNKNOWN_PEER = "-"


class ListenError(MultinetError):
    """The SOAP sockets cannot be opened (address in use, not local, ...)."""

    def __init__(self, address: str, error: OSError) -> None:
        self.address = address
        self.errno = error.errno
        super().__init__(f"cannot listen on {address}: {error.strerror or error}")


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


class StandaloneCore(GatewayCore):
    """`GatewayCore` for one node: one document per call, one status row per answer."""

    def __init__(
        self, prem: PremSettings, settings: GatewaySettings, tracker: Tracker, publisher: Publisher
    ) -> None:
        super().__init__(settings, tracker, publisher)
        self.prem = prem

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
        self.authorise(caller, mobile_router)
        delivery = check_local_call(self.prem, operation, mobile_router, downlink, uplink)
        if not self.publisher.connected():
            raise BusUnavailableError(f"node {self.prem.node} is not enforcing (stopping?)")
        assert delivery.document is not None
        ticket = self.tracker.expect(delivery.node, delivery.version)
        if self.publisher.publish(delivery.node, delivery.document):
            self.tracker.wait([ticket], self.settings.ack_deadline_s)
        else:
            self.tracker.cancel([ticket])
        status = ticket.status
        refusals: tuple[Refusal, ...] = ()
        if status is None:
            outcome, version = Outcome.NOT_REACHED, None
        elif status.result == "applied":
            outcome, version = Outcome.APPLIED, status.version
        else:
            outcome, version, refusals = Outcome.REFUSED, status.version, status.refusals
        return (
            NodeOutcome(
                delivery.node, delivery.direction, outcome, delivery.version, version, refusals
            ),
        )

    def status(
        self, mobile_router: str | None, *, caller: Caller | None = None
    ) -> tuple[NodeState, ...]:
        """This node's state (the one row of GetStatus)."""
        self.authorise(caller, mobile_router)
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


_Item = _Document | Usability | Fatal | Stop


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
        self.netns_name = netns_name
        self.tracker = Tracker()
        self.queue: queue.Queue[_Item] = queue.Queue(QUEUE_SIZE)
        self.core = StandaloneCore(prem, settings, self.tracker, self)
        app = make_wsgi_app(self.core)
        self.http: Any = wsgi.Server(
            (settings.host, settings.port),
            app,
            numthreads=settings.threads,
            timeout=int(max(1, settings.socket_timeout_s)),
            shutdown_timeout=5,
        )
        self.http.max_request_body_size = 2 * settings.max_body_bytes
        self.http.max_request_header_size = 64 * 1024
        self.http.ssl_adapter = ssl_adapter(settings)
        self.udp: UdpServer | None = None
        if settings.udp_port is not None:
            self.udp = UdpServer(
                app,
                settings.host,
                settings.udp_port,
                max_datagram_bytes=settings.udp_max_datagram_bytes,
                threads=settings.threads,
                name=f"soap-udp-{prem.node}",
            )
        self._enforcing = threading.Event()
        self._http_thread: threading.Thread | None = None
        self.watcher: LinkWatcher | None = None
        self.metrics = PremMetrics(prem.node)

    # The Publisher protocol, called from the SOAP threads.

    def connected(self) -> bool:
        """Whether the main loop is taking documents."""
        return self._enforcing.is_set()

    def publish(self, node: str, document: bytes) -> bool:
        """Queue `document` for the main loop; False when stopping or the queue is full."""
        if node != self.prem.node or not self._enforcing.is_set():
            return False
        try:
            self.queue.put_nowait(_Document(document))
        except queue.Full:
            log.warning("node %s: work queue full, a SOAP call is not applied", self.prem.node)
            return False
        return True

    @property
    def port(self) -> int:
        """The HTTP port actually bound."""
        return int(self.http.bind_addr[1])

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT (main thread only), then stop cleanly."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        # A refused call is the caller's mistake (a Fault, logged at INFO by the service).
        logging.getLogger("spyne.application.client").setLevel(logging.CRITICAL)
        self.serve()

    def serve(self) -> None:
        """Bind, enter the node's namespace, enforce, answer calls until `stop()`."""
        enforcer: Enforcer | None = None
        address = f"{self.settings.host}:{self.settings.port}"
        tls = self.http.ssl_adapter is not None
        for warning in access_warnings(
            self.settings, tls=tls, what=f"node {self.prem.node} (standalone SOAP)"
        ):
            log.warning("%s", warning)
        try:
            self.http.prepare()
        except OSError as exc:
            raise ListenError(address, exc) from exc
        try:
            if self.udp is not None:
                try:
                    self.udp.bind()
                except OSError as exc:
                    raise ListenError(
                        f"{self.settings.host}:{self.udp.requested_port}", exc
                    ) from exc
            self.metrics.serve(self.prem.metrics_listen)
            if self.netns_name is not None:
                netns.enter(self.netns_name)
            enforcer, self.watcher, changed = start_enforcement(
                self.prem, self._on_usability, self._on_fatal
            )
            self.metrics.set_state(
                enforcer.state.version,
                rules=enforcer.rules_enforced,
                policies=len(enforcer.state.policies),
            )
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
            self._http_thread = threading.Thread(
                target=self.http.serve, name=f"soap-{self.prem.node}", daemon=True
            )
            self._http_thread.start()
            if self.udp is not None:
                self.udp.start()
            log.info(
                "node %s: standalone (%s back end), version %d enforced, %d rules reconciled; "
                "serving SOAP on %s://%s:%d/ (WSDL at ?wsdl)",
                self.prem.node,
                enforcer.backend.name,
                enforcer.state.version,
                changed,
                "https" if tls else "http",
                self.settings.host,
                self.port,
            )
            self._loop(enforcer)
        finally:
            self._shutdown(enforcer)

    def stop(self) -> None:
        """Ask the main loop to finish (thread-safe)."""
        self.queue.put(Stop())

    def _loop(self, enforcer: Enforcer) -> None:
        while True:
            item = self.queue.get()
            if isinstance(item, Stop):
                return
            self._handle(enforcer, item)

    def _handle(self, enforcer: Enforcer, item: _Item) -> None:
        if isinstance(item, Fatal):
            raise RuntimeError(
                "link watcher failed; exiting so the supervisor restarts us"
            ) from item.error
        status: PolicyStatus | None = None
        if isinstance(item, Usability):
            status = enforcer.handle_unusable(item.unusable)
        elif isinstance(item, _Document):
            status = enforcer.handle_document(item.payload)
        if status is not None:
            self.tracker.on_status(status)
            self.metrics.record(
                status, rules=enforcer.rules_enforced, policies=len(enforcer.state.policies)
            )

    def _shutdown(self, enforcer: Enforcer | None) -> None:
        self._enforcing.clear()
        if enforcer is not None:
            # Documents already queued were promised to their callers: apply them.
            while True:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, _Document):
                    self._handle(enforcer, item)
        if self.udp is not None:
            self.udp.stop()
        self.http.stop()
        if self._http_thread is not None:
            self._http_thread.join(10)
        if self.watcher is not None:
            self.watcher.stop()
        if enforcer is not None and self.prem.remove_on_exit:
            enforcer.backend.remove_all()
            routing.remove_rules(self.prem)
            log.info("node %s: removed every rule it owned", self.prem.node)
        self.metrics.close()
        log.info("node %s: stopped", self.prem.node)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("node %s: signal %d, stopping", self.prem.node, signum)
        self.stop()

    def _on_fatal(self, error: BaseException) -> None:
        self.queue.put(Fatal(error))

    def _on_usability(self, unusable: frozenset[int]) -> None:
        self.queue.put(Usability(unusable))
