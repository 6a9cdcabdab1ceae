"""What the engine asks the outside world to do, as a protocol the shell implements.

The engine stays pure by never publishing or calling anything itself: the service passes an
`Effects` (publish on the bus, hand a call to the delivery pool), tests and the benchmark
pass recorders.
"""

from __future__ import annotations

from typing import Protocol

from services.contracts.messages import AuditRecord
from services.nsa.core.calls import Call
from services.nsa.core.documents import DecisionRecord


class Effects(Protocol):
    """What the engine asks the outside world to do."""

    def explain(self, mobile_router: str, record: DecisionRecord) -> None:
        """Publish a decision (retained)."""
        ...

    def audit(self, mobile_router: str, record: AuditRecord) -> None:
        """Publish the outcome of an operator action (QoS 1, not retained)."""
        ...

    def deliver(self, call: Call) -> None:
        """Start a gateway call; its `CallResult` comes back through `Engine.delivered`."""
        ...
