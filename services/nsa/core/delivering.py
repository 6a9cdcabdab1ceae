"""From a router's plan to one gateway call, and from the call's answer back to the ledgers.

A decision that changes the assignment (or follows a configuration change) plans; the plan
becomes one gateway call per router (`calls`), with one call in flight per router (so one
message per node). Its result feeds `acknowledge` / `lost` and plans again: a refusal, a
lost answer or an unexpected version gets a full Install. A call without an answer within
`call_timeout_s` (plus `DEADLINE_GRACE_S`) counts as lost. Failed calls back off
exponentially, `retry_s` to `retry_max_s`; a worker's hello at a version it was not known to
hold resets that and resyncs it (`acks`).
"""

from __future__ import annotations

import logging

from services.nsa.core.agenda import Agenda
from services.nsa.core.calls import CallResult, pair, settle
from services.nsa.core.configstore import ConfigStore
from services.nsa.core.effects import Effects
from services.nsa.core.plan import plan
from services.nsa.core.slot import Slot
from services.nsa.core.timers import TimerKind

log = logging.getLogger(__name__)

#: Added to the call timeout before a call without an answer counts as lost.
DEADLINE_GRACE_S = 5.0


class Deliveries:
    """Starts each router's call when one is due and settles its answer."""

    def __init__(self, agenda: Agenda, store: ConfigStore, effects: Effects) -> None:
        self.agenda = agenda
        self.store = store
        self.effects = effects
        self._calls = 0

    def deliver(self, slot: Slot, now: float) -> None:
        """Plan and start a call, unless one is in flight, nothing changed, or backing off."""
        if slot.call is not None or not slot.dirty or not slot.ready:
            return
        agenda = self.agenda
        if now < slot.retry_at:
            agenda.timers.push(slot.retry_at, TimerKind.RETRY, slot.router.id)
            return
        config = self.store.config_for(slot.router.id)
        ledgers, messages = plan(slot.ledgers, config, slot.state)
        slot.dirty = False
        self._calls += 1
        slot.ledgers, call = pair(ledgers, config, slot.state, messages, self._calls)
        if call is None:
            return
        slot.call = call
        slot.call_generation = slot.generation
        agenda.stats.calls += 1
        deadline = now + agenda.settings.gateway.call_timeout_s + DEADLINE_GRACE_S
        agenda.timers.push(deadline, TimerKind.DEADLINE, slot.router.id, call.ident)
        if log.isEnabledFor(logging.INFO):
            log.info("%s: sending %s", slot.router.id, call.describe())
        self.effects.deliver(call)

    def delivered(self, result: CallResult, now: float) -> None:
        """A call's answer: acknowledge or lose each node, then plan again."""
        slot = self.agenda.slots.get(result.call.mobile_router)
        if slot is None or slot.call is None or slot.call.ident != result.call.ident:
            log.info(
                "%s: late answer to call %d ignored (counted as lost already)",
                result.call.mobile_router,
                result.call.ident,
            )
            return
        self._settle(slot, result, now)

    def retry(self, slot: Slot, at: float) -> None:
        """The back-off is over (unless a later failure moved it): deliver at `settle`."""
        if slot.retry_at == at:
            self.agenda.to_deliver.add(slot.router.id)

    def deadline(self, slot: Slot, ident: int, now: float) -> None:
        """Call `ident` got no answer in time (unless answered already): it counts as lost."""
        if slot.call is not None and slot.call.ident == ident:
            timeout = self.agenda.settings.gateway.call_timeout_s + DEADLINE_GRACE_S
            self._settle(slot, CallResult(slot.call, error=f"no answer within {timeout:g} s"), now)

    def _settle(self, slot: Slot, result: CallResult, now: float) -> None:
        agenda, stats, settings = self.agenda, self.agenda.stats, self.agenda.settings
        call = result.call
        slot.call = None
        agenda.set_ledgers(slot, settle(slot.ledgers, result))
        if result.error is None:
            stats.deliveries.update(reply.outcome for reply in result.replies)
        else:
            stats.deliveries["not-reached"] += len(call.messages())
        if result.applied:
            slot.failures, slot.retry_at = 0, 0.0
            if log.isEnabledFor(logging.INFO):
                log.info("%s: %s applied", call.mobile_router, call.describe())
        else:
            stats.failed_calls += 1
            slot.failures += 1
            backoff = min(settings.retry_max_s, settings.retry_s * 2 ** (slot.failures - 1))
            slot.retry_at = now + backoff
            log.warning(
                "%s: %s: %s; full Install where needed, retry in %g s",
                call.mobile_router,
                call.describe(),
                result.describe_failure(),
                backoff,
            )
        if not result.applied or slot.generation != slot.call_generation:
            agenda.replan(slot)
        elif slot.dirty:  # something else (a status, a hello) asked for a plan meanwhile
            agenda.to_deliver.add(slot.router.id)
        # else: both nodes hold what this generation wants: planning again would find nothing
