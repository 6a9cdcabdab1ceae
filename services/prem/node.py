"""One PREM node's life cycle, shared by its two transports: the MQTT worker (worker.py) and
the standalone SOAP daemon (standalone.py).

The transport opens its sockets in the namespace the process starts in (the management side);
then the node enters its own network namespace, where everything created afterwards lives
(netlink, nftables, iptc, the link watcher's thread), brings enforcement up (the enforcer, the
policy-routing rules, the link watcher, a first reconciliation to the stored desired state) and
hands it to the transport, which starts taking documents.

Threads: the transport's threads (paho's, the SOAP server's) only queue documents; the link
watcher only queues usability changes; the main thread takes both from one bounded queue and
does all the work, so the enforcer never runs twice at once.

A document whose handling raises (a bug the refusals did not foresee) is the document's fault,
not the node's: the transport sets it aside (the worker on its dead-letter topic), the kernel is
reconciled back to the enforced state, and a `refused` status answers it. Only when that
reconciliation fails too does the node end (its own invariant is broken), for its supervisor to
restart it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from services import netns
from services.contracts.errors import Problem
from services.contracts.messages import PolicyStatus
from services.prem import routing
from services.prem.backends import make_backend
from services.prem.config import PremSettings
from services.prem.enforcer import Enforcer
from services.prem.linkwatch import LinkWatcher
from services.prem.metrics import PremMetrics
from services.runtime import on_signals

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Usability:
    """The link watcher's new set of unusable BIDs."""

    unusable: frozenset[int]


@dataclass(frozen=True)
class Fatal:
    """A background thread died: the main loop raises, the supervisor restarts the process."""

    error: BaseException


class Stop:
    """Finish the main loop (SIGTERM, SIGINT or `stop()`)."""


class Routes:
    """A BID table or device changed: where duplicates' copies go may have changed."""


D = TypeVar("D")
D_contra = TypeVar("D_contra", contravariant=True)


class Transport(Protocol[D_contra]):
    """How documents of type D reach a node and its answers leave it."""

    def open(self) -> None:
        """Open sockets and connections (and the metrics endpoint) on the management side,
        before the node enters its namespace."""
        ...

    def serve(self, enforcer: Enforcer) -> None:
        """Enforcement is up: say so and start taking documents."""
        ...

    def handle(self, enforcer: Enforcer, document: D_contra) -> PolicyStatus:
        """Answer one document through `enforcer` (applied or refused)."""
        ...

    def set_aside(self, document: D_contra, error: Exception) -> str:
        """Keep a document whose handling raised out of the way; say where it went."""
        ...

    def on_status(self, status: PolicyStatus) -> None:
        """Publish a status that answers no document in `handle` (a fallback, a recovery)."""
        ...

    def stopping(self, drain: Callable[[], None]) -> None:
        """Stop taking documents; `drain` answers the ones already queued, if promised."""
        ...

    def close(self) -> None:
        """Close what `open` opened (last, once the node's kernel state is dealt with)."""
        ...


def start_enforcement(
    settings: PremSettings,
    on_usability: Callable[[frozenset[int]], None],
    on_fatal: Callable[[BaseException], None],
    on_routes: Callable[[], None] | None = None,
) -> tuple[Enforcer, LinkWatcher, int]:
    """Enforcer, policy-routing rules and link watcher, in the current network namespace.

    Returns them with the number of rule changes the first reconciliation made (the kernel is
    brought to the stored desired state before any new document is taken).
    """
    enforcer = Enforcer(settings, make_backend(settings))
    routing.ensure_rules(settings)
    watcher = LinkWatcher(settings, on_usability, on_error=on_fatal, on_routes=on_routes)
    watcher.start()
    enforcer.unusable = watcher.current()
    return enforcer, watcher, enforcer.reconcile()


class PremNode(Generic[D]):
    """One node's enforcement, fed by `transport` (see the module docstring)."""

    def __init__(
        self,
        settings: PremSettings,
        transport: Transport[D],
        metrics: PremMetrics,
        *,
        netns_name: str | None = None,
        queue_size: int = 256,
    ) -> None:
        self.settings = settings
        self.transport = transport
        self.metrics = metrics
        self.netns_name = netns_name
        self.queue: queue.Queue[D | Usability | Routes | Fatal | Stop] = queue.Queue(queue_size)
        #: A `Routes` item is queued and not yet taken (bursts of route events queue one).
        self._routes_pending = threading.Event()
        self.enforcer: Enforcer | None = None
        self.watcher: LinkWatcher | None = None

    def put(self, document: D) -> None:
        """Queue a document, waiting while the queue is full (thread-safe)."""
        self.queue.put(document)

    def offer(self, document: D) -> bool:
        """Queue a document unless the queue is full (thread-safe)."""
        try:
            self.queue.put_nowait(document)
        except queue.Full:
            return False
        return True

    def stop(self) -> None:
        """Ask the main loop to finish (thread-safe)."""
        self.queue.put(Stop())

    @property
    def version(self) -> int | None:
        """The version enforced now (None before enforcement is up)."""
        return None if self.enforcer is None else self.enforcer.state.version

    def run(self) -> None:
        """Open, enforce, serve until SIGTERM/SIGINT or `stop()`, then stop in order (main
        thread only)."""
        on_signals(self.settings.node, self.stop)
        try:
            self.transport.open()
            if self.netns_name is not None:
                netns.enter(self.netns_name)
            enforcer, self.watcher, changed = start_enforcement(
                self.settings, self._on_usability, self._on_fatal, self._on_routes
            )
            self.enforcer = enforcer
            self.metrics.set_state(
                enforcer.state.version,
                rules=enforcer.rules_enforced,
                policies=len(enforcer.state.policies),
            )
            log.info(
                "node %s: started (%s back end), version %d enforced, %d rules reconciled",
                self.settings.node,
                enforcer.backend.name,
                enforcer.state.version,
                changed,
            )
            self.transport.serve(enforcer)
            self._loop(enforcer)
        finally:
            self._shutdown()

    def _loop(self, enforcer: Enforcer) -> None:
        while True:
            item = self.queue.get()
            if isinstance(item, Stop):
                return
            if isinstance(item, Fatal):
                raise RuntimeError(
                    "link watcher failed; exiting so the supervisor restarts us"
                ) from item.error
            if isinstance(item, Usability | Routes):
                if isinstance(item, Routes):
                    self._routes_pending.clear()
                    status = enforcer.handle_routes()
                else:
                    status = enforcer.handle_unusable(item.unusable)
                if status is not None:
                    self.transport.on_status(status)
                    self._record(enforcer, status)
                continue
            self._document(enforcer, item)

    def _document(self, enforcer: Enforcer, document: D) -> None:
        """Answer one document (applied, refused, or set aside)."""
        try:
            status = self.transport.handle(enforcer, document)
        except Exception as exc:
            where = self.transport.set_aside(document, exc)
            status = self._recover(enforcer, exc, where)
        self._record(enforcer, status)

    def _recover(self, enforcer: Enforcer, error: Exception, where: str) -> PolicyStatus:
        """After a document set aside: the kernel back to the enforced state, and a refusal,
        so that a caller waiting for this node gets an answer."""
        # Whatever the handling changed before it raised is undone; if this fails, the node's
        # own state is in doubt and it ends, for its supervisor to restart it.
        enforcer.reconcile()
        problem = Problem(
            f"not handled: {type(error).__name__} while handling the document; nothing "
            f"changed, the document is set aside on {where}"
        )
        status = enforcer.refuse(problem)
        self.transport.on_status(status)
        return status

    def _record(self, enforcer: Enforcer, status: PolicyStatus) -> None:
        """Metrics after a status: counters, latency, what is enforced now."""
        self.metrics.record(
            status, rules=enforcer.rules_enforced, policies=len(enforcer.state.policies)
        )

    def _drain(self) -> None:
        """Answer the documents still queued (a transport that promised them to callers)."""
        if self.enforcer is None:
            return
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return
            if not isinstance(item, Stop | Fatal | Usability | Routes):
                self._document(self.enforcer, item)

    def _shutdown(self) -> None:
        self.transport.stopping(self._drain)
        if self.watcher is not None:
            self.watcher.stop()
        if self.enforcer is not None and self.settings.remove_on_exit:
            self.enforcer.backend.remove_all()
            routing.remove_rules(self.settings)
            log.info("node %s: removed every rule it owned", self.settings.node)
        self.transport.close()
        log.info("node %s: stopped", self.settings.node)

    def _on_fatal(self, error: BaseException) -> None:
        self.queue.put(Fatal(error))

    def _on_usability(self, unusable: frozenset[int]) -> None:
        self.queue.put(Usability(unusable))

    def _on_routes(self) -> None:
        if not self._routes_pending.is_set():
            self._routes_pending.set()
            self.queue.put(Routes())
