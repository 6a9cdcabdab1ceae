"""What the gateway knows of its workers, and the acknowledgements calls are waiting for.

The bus thread feeds statuses and presences in; SOAP threads register what they expect
before publishing and wait on one condition. A status answers the oldest waiting ticket of
the same node and requested version, so two calls carrying the same version each get one
answer. No MQTT here, so the correlation is tested by feeding messages directly.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from services.contracts.messages import PolicyStatus, Presence, Refusal


@dataclass(eq=False)
class Ticket:
    """One expected acknowledgement: filled in by the bus thread, read by the caller."""

    node: str
    version: int
    status: PolicyStatus | None = None


@dataclass(frozen=True)
class NodeView:
    """A node as last reported on the bus; None where nothing was heard yet."""

    node: str
    online: bool | None = None
    version: int | None = None
    last_result: str | None = None
    refused_version: int | None = None
    refusals: tuple[Refusal, ...] = field(default=())


class Tracker:
    """Thread-safe correlation of statuses with waiting calls, plus each node's last view."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._changed = threading.Condition()
        self._waiting: dict[tuple[str, int], deque[Ticket]] = {}
        self._views: dict[str, NodeView] = {}
        self._released = False

    def expect(self, node: str, version: int) -> Ticket:
        """Register a ticket; call before publishing so no answer can be missed."""
        ticket = Ticket(node, version)
        with self._changed:
            self._waiting.setdefault((node, version), deque()).append(ticket)
        return ticket

    def wait(self, tickets: Sequence[Ticket], timeout_s: float) -> None:
        """Block until every ticket is answered, `timeout_s` passed or `release` was called;
        then forget them."""
        deadline = self._clock() + timeout_s
        with self._changed:
            try:
                while not self._released and any(t.status is None for t in tickets):
                    left = deadline - self._clock()
                    if left <= 0:
                        return
                    self._changed.wait(left)
            finally:
                for ticket in tickets:
                    self._forget(ticket)

    def release(self) -> int:
        """Stop every wait, now and later (the gateway is stopping); return how many tickets
        were still unanswered."""
        with self._changed:
            self._released = True
            self._changed.notify_all()
            return sum(len(q) for q in self._waiting.values())

    def cancel(self, tickets: Sequence[Ticket]) -> None:
        """Forget tickets that will not be waited for (their document was never published)."""
        with self._changed:
            for ticket in tickets:
                self._forget(ticket)

    def on_status(self, status: PolicyStatus) -> None:
        """A worker's status: update its view and answer the ticket it acknowledges."""
        with self._changed:
            previous = self._views.get(status.node, NodeView(status.node))
            refused = status.result == "refused"
            self._views[status.node] = NodeView(
                status.node,
                # A status is only published by a running worker.
                online=True,
                version=status.version,
                last_result=status.result,
                refused_version=status.requested_version if refused else previous.refused_version,
                refusals=status.refusals if refused else previous.refusals,
            )
            if status.requested_version is None:
                return
            queue = self._waiting.get((status.node, status.requested_version))
            if queue:
                ticket = queue.popleft()
                ticket.status = status
                if not queue:
                    del self._waiting[(status.node, status.requested_version)]
                self._changed.notify_all()

    def on_presence(self, presence: Presence) -> None:
        """A hello (with the enforced version) or a last will."""
        with self._changed:
            previous = self._views.get(presence.node, NodeView(presence.node))
            version = presence.version if presence.version is not None else previous.version
            self._views[presence.node] = NodeView(
                presence.node,
                online=presence.online,
                version=version,
                last_result=previous.last_result,
                refused_version=previous.refused_version,
                refusals=previous.refusals,
            )

    def view(self, node: str) -> NodeView:
        """What is known of `node`."""
        with self._changed:
            return self._views.get(node, NodeView(node))

    def pending(self) -> int:
        """Tickets still waiting (for tests: nothing must leak)."""
        with self._changed:
            return sum(len(q) for q in self._waiting.values())

    def _forget(self, ticket: Ticket) -> None:
        queue = self._waiting.get((ticket.node, ticket.version))
        if queue is None:
            return
        try:
            queue.remove(ticket)
        except ValueError:
            return
        if not queue:
            del self._waiting[(ticket.node, ticket.version)]
