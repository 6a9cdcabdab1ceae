"""One whole NSA step for one mobile router: decide, then plan the messages (pure).

The service calls this on every input (metrics, link state, binding event, configuration
change, the `wake_at` timer) and sends the messages it returns; nothing here sends.
"""

from __future__ import annotations

from services.contracts.policy import PolicyMessage
from services.nsa.core.config import NsaConfig
from services.nsa.core.decide import Decision, decide
from services.nsa.core.frozen import Frozen
from services.nsa.core.inputs import MrView, Trigger
from services.nsa.core.plan import MrLedgers, plan
from services.nsa.core.state import MrState


class Step(Frozen):
    """The decision (state, explanation, wake time), the ledgers after sending, the messages."""

    decision: Decision
    ledgers: MrLedgers
    messages: tuple[PolicyMessage, ...] = ()

    @property
    def state(self) -> MrState:
        """The state to pass to the next step."""
        return self.decision.state


def step(
    view: MrView,
    config: NsaConfig,
    state: MrState,
    ledgers: MrLedgers,
    *,
    now: float,
    trigger: Trigger,
) -> Step:
    """Decide every class of the router, then the Update/Install messages for its nodes."""
    decision = decide(view, config, state, now, trigger)
    new_ledgers, messages = plan(ledgers, config, decision.state)
    return Step(decision=decision, ledgers=new_ledgers, messages=messages)
