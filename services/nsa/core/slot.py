"""What the decision thread holds per mobile router, and the counters it keeps.

Plain mutable records: only the decision thread (`engine`) touches them, so they need no
locking; the frozen core models they hold (view, state, ledgers) are replaced, never changed.
"""

from __future__ import annotations

import hashlib
from collections import Counter, deque
from dataclasses import dataclass, field

from services.contracts.messages import LinkMetrics
from services.nsa.core.calls import Call
from services.nsa.core.inputs import MrView, Trigger, apply_metrics
from services.nsa.core.materiality import Tolerance
from services.nsa.core.pins import Pin
from services.nsa.core.plan import MrLedgers
from services.nsa.core.settings import RouterEntry
from services.nsa.core.state import MrState

#: How many latency samples the statistics keep (the most recent ones).
SAMPLES = 200_000


@dataclass(eq=False)
class Slot:
    """Everything the NSA holds for one mobile router."""

    router: RouterEntry
    view: MrView
    state: MrState
    ledgers: MrLedgers
    tolerance: Tolerance | None = None
    trigger: Trigger | None = None  # inputs wait for a decision
    oldest: float | None = None  # send time of the oldest input waiting
    ready: bool = False
    first_input_at: float | None = None
    wake_at: float | None = None
    refresh_at: float | None = None
    refresh_armed: bool = False  # a REFRESH timer is queued (one per router at most)
    #: 0.75-1.0 of refresh_s, fixed per router: routers first decided together (at start)
    #: must not all be refreshed in the same instant ever after.
    refresh_spread: float = 1.0
    call: Call | None = None
    dirty: bool = False  # the nodes may not hold the assignment: plan
    generation: int = 0  # counts changes of what the nodes must hold
    call_generation: int = 0  # the generation the call in flight was planned for
    failures: int = 0
    retry_at: float = 0.0
    #: reports inside the tolerance, not applied to the view until it is next needed
    unapplied: dict[int, tuple[LinkMetrics, float]] = field(default_factory=dict)
    metrics_seen: dict[int, float] = field(default_factory=dict)
    state_seen: dict[int, float] = field(default_factory=dict)
    #: operator pins by class (`pins`): inputs of every decision until they end
    pins: dict[str, Pin] = field(default_factory=dict)


@dataclass
class Stats:
    """Counters and recent latencies, read by the benchmark and the tests."""

    inputs: Counter[str] = field(default_factory=Counter)
    refused: int = 0
    stale: int = 0
    immaterial: int = 0
    decisions: int = 0
    #: classes whose links changed (a router's first decision not counted)
    moves: int = 0
    calls: int = 0
    failed_calls: int = 0
    #: node documents of calls by the answer: applied, refused, not-reached (also every
    #: document of a call without an answer: a SOAP Fault, the gateway unreachable, a timeout)
    deliveries: Counter[str] = field(default_factory=Counter)
    #: times a node's state fell in doubt (a refusal, a lost answer, a hello at a version it was
    #: not known to hold), so that its next document is a full Install
    resyncs: int = 0
    #: metrics: send time -> handled (decided, or found immaterial), seconds
    input_latency: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLES))
    #: send time of the oldest input -> decided and planned, seconds
    decision_latency: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLES))
    #: send times of the inputs handled / decided in the current batch
    handled: list[float] = field(default_factory=list)
    decided: list[float] = field(default_factory=list)

    def batch_done(self, end: float) -> list[float]:
        """Close a batch: every input handled in it is done at `end`. Returns the latency of
        each decision of the batch that answered an input."""
        decided = [end - sent for sent in self.decided]
        self.input_latency.extend(end - sent for sent in self.handled)
        self.decision_latency.extend(decided)
        self.handled.clear()
        self.decided.clear()
        return decided


def assignment(state: MrState) -> dict[str, tuple[object, ...]]:
    """What the nodes must hold for `state`: each class's BIDs, fallbacks, balance shares and
    duplicate copies."""
    return {name: (c.flows, c.fallbacks, c.balance, c.copies) for name, c in state.classes.items()}


def spread(name: str) -> float:
    """A stable number in [0, 1) for `name` (the same in every process and run)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") / 2**32


def owing(ledgers: MrLedgers, node: str) -> bool:
    """Whether `node` (scheme 2: the MR through its HA) still waits for a full Install."""
    ledger = ledgers.mr if ledgers.mr is not None and ledgers.mr.node == node else ledgers.ha
    return ledger.needs_resync


def current_view(slot: Slot) -> MrView:
    """The router's view with the reports kept aside applied (in arrival order)."""
    if slot.unapplied:
        view = slot.view
        for metrics, received in slot.unapplied.values():
            view, _ = apply_metrics(view, metrics, received)
        slot.view = view
        slot.unapplied.clear()
    return slot.view
