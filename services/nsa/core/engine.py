"""The decision thread's state machine: every owned router's view, state, ledgers and timers.

Only the decision thread calls an `Engine`, so nothing here locks. Inputs come in as `Raw`
bus messages and `CallResult`s; what goes out goes through `Effects` (publish a decision,
start a delivery). Time is an argument everywhere, so tests drive it with a fake clock.

Per router, in order:

- Inputs are parsed and applied to the view at once; a router with inputs waiting is decided
  once per batch (`settle`), however many arrived. A metrics report inside the last
  decision's tolerance (`materiality`) is applied but not decided on, and so is a binding
  event that leaves the binding's status as it was (a refresh). Reports older than the last
  one of their link are dropped (QoS 0 can reorder across reconnects), and a report sent more
  than `MAX_AHEAD_S` ahead of our clock is refused (it would make the link's next reports
  look stale).
- After a restart the NSA knows no bindings (binding events are not retained), and a link
  without a live binding is not eligible. So a router is first decided once every measured
  link has had a binding event and `first_period_s` has passed since its first input (so
  that every link's first report is in), or `startup_hold_s` after start: a restart must not
  withdraw or move policies out of ignorance. The workers keep their policies meanwhile.
- A decision that changes the assignment (or follows a configuration change) plans; the
  plan becomes one gateway call per router (`calls`), with one call in flight per router (so
  one message per node). Its result feeds `acknowledge` / `lost` and plans again: a refusal,
  a lost answer or an unexpected version gets a full Install. A call without an answer
  within `call_timeout_s` (plus a grace) counts as lost. Failed calls back off
  exponentially, `retry_s` to `retry_max_s`; a worker's hello at a version it was not known
  to hold resets that and resyncs it.
- Timers: `wake_at` of the decision (dwell times, metrics ages), a periodic refresh (so the
  retained explanation stays current; spread over 75-100 % of `refresh_s` per router),
  retries, call deadlines, the start-up hold.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

from pydantic import ValidationError

from services.contracts.echo import FIELD_LIMIT, echo
from services.contracts.errors import InvalidInput, Problem
from services.contracts.messages import (
    BindingEvent,
    LinkMetrics,
    LinkState,
    PolicyStatus,
    Presence,
    decode,
)
from services.nsa.core.calls import Call, CallResult, pair, settle
from services.nsa.core.config import NsaConfig
from services.nsa.core.configstore import ConfigStore
from services.nsa.core.decide import decide
from services.nsa.core.documents import DecisionRecord
from services.nsa.core.inputs import (
    MrView,
    Trigger,
    TriggerKind,
    apply_binding_event,
    apply_link_state,
    apply_metrics,
)
from services.nsa.core.materiality import tolerance
from services.nsa.core.plan import MrLedgers, acknowledge, greet, new_ledgers, plan
from services.nsa.core.routes import InputKind, Raw
from services.nsa.core.settings import NsaServiceSettings, RouterEntry
from services.nsa.core.slot import Slot, Stats, assignment, owing, spread
from services.nsa.core.state import MrState
from services.nsa.core.summary import summarise
from services.nsa.core.timers import TimerKind, Timers

log = logging.getLogger(__name__)

#: How far ahead of our clock a report's send time may be (clocks of different hosts differ).
MAX_AHEAD_S = 300.0

#: Added to the call timeout before a call without an answer counts as lost.
DEADLINE_GRACE_S = 5.0

#: When inputs of several kinds wait for one decision, the explanation names the strongest.
_STRENGTH = {
    TriggerKind.TIMER: 0,
    TriggerKind.METRICS: 1,
    TriggerKind.CONFIG: 2,
    TriggerKind.START: 3,
    TriggerKind.LINK_STATE: 4,
    TriggerKind.BINDING: 5,
    TriggerKind.HANDOVER_COMPLETED: 6,
    TriggerKind.HANDOVER_STARTED: 6,
}


class Effects(Protocol):
    """What the engine asks the outside world to do."""

    def explain(self, mobile_router: str, record: DecisionRecord) -> None:
        """Publish a decision (retained)."""
        ...

    def deliver(self, call: Call) -> None:
        """Start a gateway call; its `CallResult` comes back through `Engine.delivered`."""
        ...


class Engine:
    """All per-router state of one replica; see the module docstring for the rules."""

    def __init__(
        self,
        settings: NsaServiceSettings,
        routers: Iterable[RouterEntry],
        store: ConfigStore,
        effects: Effects,
        *,
        now: float,
    ) -> None:
        self.settings = settings
        self.store = store
        self.effects = effects
        self.stats = Stats()
        self.slots: dict[str, Slot] = {}
        self._by_node: dict[str, list[Slot]] = {}
        for router in routers:
            slot = Slot(
                router=router,
                view=MrView(mobile_router=router.id),
                state=MrState(mobile_router=router.id),
                ledgers=new_ledgers(
                    router.id,
                    ha_node=router.ha_node,
                    mr_node=router.mr_node,
                    scheme=settings.scheme,
                ),
            )
            slot.refresh_spread = 0.75 + 0.25 * spread(router.id)
            self.slots[router.id] = slot
            for node in (router.ha_node, router.mr_node):
                self._by_node.setdefault(node, []).append(slot)
        self._timers = Timers()
        self._calls = 0
        self._to_decide: set[str] = set()
        self._to_deliver: set[str] = set()
        self._hold_until = now + settings.startup_hold_s
        self._timers.push(self._hold_until, TimerKind.HOLD)

    # inputs -------------------------------------------------------------------------------
    def accept(self, raw: Raw, now: float) -> None:
        """Parse one bus message and apply it; refused input is logged with its topic.

        What the log repeats of the input (a field path made of the payload's own keys) is
        echoed (`services.contracts.echo`): a key may hold a newline that would forge a line.
        """
        self.stats.inputs[raw.kind.value] += 1
        try:
            self._accept(raw, now)
        except ValidationError as exc:
            self.stats.refused += 1
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "payload"
            log.warning(
                "refused a malformed %s on %s: %s: %s (%d problem(s))",
                raw.kind.value,
                echo(raw.topic),
                echo(where, FIELD_LIMIT),
                echo(first["msg"]),
                exc.error_count(),
            )
        except InvalidInput as exc:
            self.stats.refused += 1
            log.warning("refused a %s on %s: %s", raw.kind.value, echo(raw.topic), exc)

    def _accept(self, raw: Raw, now: float) -> None:
        kind = raw.kind
        if kind is InputKind.METRICS:
            self._metrics(self.slots[raw.key], decode(LinkMetrics, raw.payload), now)
        elif kind is InputKind.LINK_STATE:
            self._link_state(self.slots[raw.key], decode(LinkState, raw.payload), now)
        elif kind is InputKind.BINDING:
            self._binding(self.slots[raw.key], decode(BindingEvent, raw.payload), now)
        elif kind is InputKind.STATUS:
            self._status(raw.key, decode(PolicyStatus, raw.payload))
        elif kind is InputKind.PRESENCE:
            self._presence(raw.key, decode(Presence, raw.payload), now)
        elif kind is InputKind.PREFERENCES:
            self._preferences(raw, now)
        elif kind is InputKind.RULES:
            self._rules(raw, now)

    def _metrics(self, slot: Slot, metrics: LinkMetrics, now: float) -> None:
        if not self._in_order(slot.metrics_seen, metrics.bid, metrics.timestamp, now):
            return
        self.stats.handled.append(metrics.timestamp)
        if slot.trigger is None and slot.tolerance is not None:
            held = slot.unapplied.get(metrics.bid)
            link = slot.view.links.get(metrics.bid)
            last = held[1] if held is not None else None if link is None else link.updated_at
            if slot.tolerance.admits(metrics, now, last):
                # Kept for the next decision, not applied now: a report replaces every
                # value of its link, so only the latest one per link matters.
                slot.unapplied[metrics.bid] = (metrics, now)
                self.stats.immaterial += 1
                return
        view = self._view(slot)
        slot.view, trigger = apply_metrics(view, metrics, now)
        self._waiting(slot, trigger, now, metrics.timestamp)

    def _in_order(self, seen: dict[int, float], bid: int, timestamp: float, now: float) -> bool:
        """Record a link's newest send time; False (counted stale) for one older than it.

        A send time further ahead of our clock than `MAX_AHEAD_S` is refused (InvalidInput):
        recorded, it would make every later report of the link look stale until then.
        """
        if timestamp > now + MAX_AHEAD_S:
            problem = Problem(
                f"sent at {timestamp:.3f}, {timestamp - now:.0f} s ahead of this replica's "
                f"clock (more than {MAX_AHEAD_S:.0f} s): the sender's clock is wrong",
                field="timestamp",
            )
            raise InvalidInput([problem])
        last = seen.get(bid)
        if last is not None and timestamp < last:
            self.stats.stale += 1
            return False
        seen[bid] = timestamp
        return True

    def _view(self, slot: Slot) -> MrView:
        """The router's view with the reports kept aside applied (in arrival order)."""
        if slot.unapplied:
            view = slot.view
            for metrics, received in slot.unapplied.values():
                view, _ = apply_metrics(view, metrics, received)
            slot.view = view
            slot.unapplied.clear()
        return slot.view

    def view_of(self, mobile_router: str) -> MrView:
        """What the engine knows of a router now (for tests and tools)."""
        return self._view(self.slots[mobile_router])

    def _link_state(self, slot: Slot, state: LinkState, now: float) -> None:
        if not self._in_order(slot.state_seen, state.bid, state.timestamp, now):
            return
        slot.view, trigger = apply_link_state(self._view(slot), state, now)
        self._waiting(slot, trigger, now, state.timestamp)

    def _binding(self, slot: Slot, event: BindingEvent, now: float) -> None:
        before = slot.view.bindings.get(event.bid)
        slot.view, trigger = apply_binding_event(self._view(slot), event, now)
        after = slot.view.bindings[event.bid]
        if (
            slot.trigger is None
            and slot.tolerance is not None
            and before is not None
            and before.status is after.status
        ):
            # A refresh (or a repeated event): the decision only reads the binding's status.
            self.stats.immaterial += 1
            return
        self._waiting(slot, trigger, now, event.timestamp)

    def _status(self, node: str, status: PolicyStatus) -> None:
        slot = self.slots.get(status.mobile_router)
        if slot is None or status.node != node or node not in _nodes(slot):
            log.debug("node %s: status for %s not ours, ignored", node, status.mobile_router)
            return
        if status.result == "fallback":
            active = ", ".join(f"{f.policy_id}->{f.active_bid}" for f in status.fallbacks)
            log.info("%s: node %s fell back on its own: %s", slot.router.id, node, active or "none")
        self._set_ledgers(slot, acknowledge(slot.ledgers, status))
        self._replan(slot)

    def _presence(self, node: str, presence: Presence, now: float) -> None:
        if presence.node != node or presence.service != "prem":
            return
        for slot in self._by_node.get(node, ()):
            if not presence.online:
                log.info("%s: node %s went offline", slot.router.id, node)
                continue
            greeted = greet(slot.ledgers, presence)
            if greeted == slot.ledgers and not owing(greeted, node):
                log.debug("%s: node %s at version %s", slot.router.id, node, presence.version)
                continue
            self._set_ledgers(slot, greeted)
            log.info(
                "%s: node %s says hello at version %s, not the one it was known to hold: "
                "full Install next",
                slot.router.id,
                node,
                presence.version,
            )
            slot.failures, slot.retry_at = 0, 0.0
            self._replan(slot)

    def _preferences(self, raw: Raw, now: float) -> None:
        try:
            self.store.set_preferences(raw.key, raw.payload)
        except InvalidInput as exc:
            self.stats.refused += 1
            log.warning(
                "%s: refused preferences on %s, keeping the last good ones: %s",
                raw.key,
                raw.topic,
                exc,
            )
            return
        log.info("%s: preferences %s", raw.key, "updated" if raw.payload else "from the file")
        trigger = Trigger(kind=TriggerKind.CONFIG, detail="preferences")
        self._waiting(self.slots[raw.key], trigger, now)

    def _rules(self, raw: Raw, now: float) -> None:
        try:
            self.store.set_rules(raw.payload)
        except InvalidInput as exc:
            self.stats.refused += 1
            log.warning(
                "refused operator rules on %s, keeping the last good ones: %s", raw.topic, exc
            )
            return
        log.info("operator rules %s", "updated" if raw.payload else "from the file")
        self.reconfigured(now, "operator rules")

    def reconfigured(self, now: float, what: str) -> None:
        """The configuration changed for every router: decide each again."""
        for slot in self.slots.values():
            self._waiting(slot, Trigger(kind=TriggerKind.CONFIG, detail=what), now)

    def _waiting(self, slot: Slot, trigger: Trigger, now: float, sent: float | None = None) -> None:
        """`trigger` waits for the router's next decision (kept if it is the strongest)."""
        if slot.trigger is None or _STRENGTH[trigger.kind] >= _STRENGTH[slot.trigger.kind]:
            slot.trigger = trigger
        if sent is not None and (slot.oldest is None or sent < slot.oldest):
            slot.oldest = sent
        if not slot.ready:
            if slot.first_input_at is None:
                slot.first_input_at = now
                self._timers.push(
                    now + self.settings.first_period_s, TimerKind.READY, slot.router.id
                )
            self._check_ready(slot, now)
        if slot.ready:
            self._to_decide.add(slot.router.id)

    def _check_ready(self, slot: Slot, now: float) -> None:
        view = self._view(slot)
        measured = sorted(b for b, link in view.links.items() if link.technology is not None)
        unbound = [b for b in measured if b not in view.bindings]
        first = slot.first_input_at if slot.first_input_at is not None else now
        complete = measured and not unbound and now >= first + self.settings.first_period_s
        if not complete and now < self._hold_until:
            return
        slot.ready = True
        slot.trigger = Trigger(kind=TriggerKind.START, detail="first decision")
        if complete:
            log.info(
                "%s: deciding from now on (links measured and bound: %s)", slot.router.id, measured
            )
        else:
            log.warning(
                "%s: start-up hold over (%g s): deciding without binding events for BID %s "
                "(measured: %s)",
                slot.router.id,
                self.settings.startup_hold_s,
                unbound,
                measured,
            )

    # decisions ----------------------------------------------------------------------------
    def settle(self, now: float) -> None:
        """Decide each router with inputs waiting, once, then start the calls now due."""
        for mobile_router in sorted(self._to_decide):
            self._decide(self.slots[mobile_router], now)
        self._to_decide.clear()
        for mobile_router in sorted(self._to_deliver):
            self._deliver(self.slots[mobile_router], now)
        self._to_deliver.clear()

    def _decide(self, slot: Slot, now: float) -> None:
        trigger = slot.trigger or Trigger(kind=TriggerKind.TIMER)
        config = self.store.config_for(slot.router.id)
        decision = decide(self._view(slot), config, slot.state, now, trigger)
        changed = assignment(decision.state) != assignment(slot.state)
        slot.state = decision.state
        slot.tolerance = tolerance(slot.view, config, decision, now)
        slot.trigger = None
        if slot.oldest is not None:
            self.stats.decided.append(slot.oldest)
            slot.oldest = None
        self.stats.decisions += 1
        if trigger.kind is not TriggerKind.START:
            self.stats.moves += sum(1 for entry in decision.explanation.classes if entry.moved)
        if decision.wake_at is not None and decision.wake_at != slot.wake_at:
            slot.wake_at = decision.wake_at
            self._timers.push(decision.wake_at, TimerKind.WAKE, slot.router.id)
        if self.settings.refresh_s is not None:
            slot.refresh_at = now + self.settings.refresh_s * slot.refresh_spread
            if not slot.refresh_armed:
                slot.refresh_armed = True
                self._timers.push(slot.refresh_at, TimerKind.REFRESH, slot.router.id)
        record = DecisionRecord(
            sender=self.settings.name,
            replica=self.settings.replica,
            explanation=decision.explanation,
        )
        self.effects.explain(slot.router.id, record)
        if log.isEnabledFor(logging.INFO):  # the summary costs as much as a small decision
            log.info("decision %s", summarise(decision.explanation))
        if changed or trigger.kind in (TriggerKind.CONFIG, TriggerKind.START):
            slot.generation += 1
            self._replan(slot)

    def _replan(self, slot: Slot) -> None:
        slot.dirty = True
        self._to_deliver.add(slot.router.id)

    def _set_ledgers(self, slot: Slot, ledgers: MrLedgers) -> None:
        """Replace the router's ledgers, counting each node whose state fell in doubt."""
        before = (slot.ledgers.ha, slot.ledgers.mr)
        for old, new in zip(before, (ledgers.ha, ledgers.mr), strict=True):
            if old is not None and new is not None and new.needs_resync and not old.needs_resync:
                self.stats.resyncs += 1
        slot.ledgers = ledgers

    # delivery -----------------------------------------------------------------------------
    def _deliver(self, slot: Slot, now: float) -> None:
        if slot.call is not None or not slot.dirty or not slot.ready:
            return
        if now < slot.retry_at:
            self._timers.push(slot.retry_at, TimerKind.RETRY, slot.router.id)
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
        self.stats.calls += 1
        deadline = now + self.settings.gateway.call_timeout_s + DEADLINE_GRACE_S
        self._timers.push(deadline, TimerKind.DEADLINE, slot.router.id, call.ident)
        if log.isEnabledFor(logging.INFO):
            log.info("%s: sending %s", slot.router.id, call.describe())
        self.effects.deliver(call)

    def delivered(self, result: CallResult, now: float) -> None:
        """A call's answer: acknowledge or lose each node, then plan again."""
        slot = self.slots.get(result.call.mobile_router)
        if slot is None or slot.call is None or slot.call.ident != result.call.ident:
            log.info(
                "%s: late answer to call %d ignored (counted as lost already)",
                result.call.mobile_router,
                result.call.ident,
            )
            return
        self._settle_call(slot, result, now)

    def _settle_call(self, slot: Slot, result: CallResult, now: float) -> None:
        call = result.call
        slot.call = None
        self._set_ledgers(slot, settle(slot.ledgers, result))
        if result.error is None:
            self.stats.deliveries.update(reply.outcome for reply in result.replies)
        else:
            self.stats.deliveries["not-reached"] += len(call.messages())
        if result.applied:
            slot.failures, slot.retry_at = 0, 0.0
            if log.isEnabledFor(logging.INFO):
                log.info("%s: %s applied", call.mobile_router, call.describe())
        else:
            self.stats.failed_calls += 1
            slot.failures += 1
            backoff = min(
                self.settings.retry_max_s, self.settings.retry_s * 2 ** (slot.failures - 1)
            )
            slot.retry_at = now + backoff
            log.warning(
                "%s: %s: %s; full Install where needed, retry in %g s",
                call.mobile_router,
                call.describe(),
                result.describe_failure(),
                backoff,
            )
        if not result.applied or slot.generation != slot.call_generation:
            self._replan(slot)
        elif slot.dirty:  # something else (a status, a hello) asked for a plan meanwhile
            self._to_deliver.add(slot.router.id)
        # else: both nodes hold what this generation wants: planning again would find nothing

    # timers -------------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """When the earliest timer is due (None: no timer)."""
        return self._timers.next_deadline()

    def due(self, now: float) -> None:
        """Fire every timer due at `now`; the decisions they cause wait for `settle`."""
        for at, kind, mobile_router, ident in self._timers.due(now):
            if kind is TimerKind.HOLD:
                self._hold_over(now)
                continue
            slot = self.slots[mobile_router]
            if kind is TimerKind.WAKE and slot.wake_at == at:
                slot.wake_at = None
                self._waiting(slot, Trigger(kind=TriggerKind.TIMER), now)
            elif kind is TimerKind.REFRESH:
                self._refresh(slot, now)
            elif kind is TimerKind.READY and not slot.ready:
                self._check_ready(slot, now)
                if slot.ready:
                    self._to_decide.add(mobile_router)
            elif kind is TimerKind.RETRY and slot.retry_at == at:
                self._to_deliver.add(mobile_router)
            elif kind is TimerKind.DEADLINE and slot.call is not None and slot.call.ident == ident:
                timeout = self.settings.gateway.call_timeout_s + DEADLINE_GRACE_S
                self._settle_call(
                    slot, CallResult(slot.call, error=f"no answer within {timeout:g} s"), now
                )

    def _refresh(self, slot: Slot, now: float) -> None:
        """Decide again when nothing did for `refresh_s`; a later decision moved the time."""
        slot.refresh_armed = False
        if slot.refresh_at is None:
            return
        if slot.refresh_at > now:
            slot.refresh_armed = True
            self._timers.push(slot.refresh_at, TimerKind.REFRESH, slot.router.id)
            return
        self._waiting(slot, Trigger(kind=TriggerKind.TIMER, detail="refresh"), now)

    def _hold_over(self, now: float) -> None:
        for slot in self.slots.values():
            if not slot.ready:
                self._waiting(slot, Trigger(kind=TriggerKind.START), now)

    # configuration ------------------------------------------------------------------------
    def reload(self, settings: NsaServiceSettings, config: NsaConfig, now: float) -> list[str]:
        """Adopt a reloaded settings file; returns the keys that need a restart (kept)."""
        running = self.settings
        restart = [
            key
            for key in ("name", "replicas", "replica", "scheme", "mobile_routers", "gateway")
            if getattr(settings, key) != getattr(running, key)
        ]
        self.settings = settings.model_copy(update={key: getattr(running, key) for key in restart})
        for dropped in self.store.set_base(config):
            log.warning("reload: dropped %s", dropped)
        self.reconfigured(now, "settings file reloaded")
        return restart


def _nodes(slot: Slot) -> tuple[str, str]:
    return slot.router.ha_node, slot.router.mr_node
