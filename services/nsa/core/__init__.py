"""The NSA's pure core (Network Selection Algorithm): decisions as functions of data.

No MQTT, SOAP, netlink or file I/O here. The service around it feeds bus messages in, calls
one pure step, sends the messages it returns and publishes the explanation. Everything is per
mobile router (MR); all models are frozen pydantic models (JSON-able, unknown keys refused).

Modules: `config` (preferences, profiles, rules, settings), `inputs` (the view of links and
bindings), `eligibility` (hard constraints), `scoring` (utility and TOPSIS arithmetic),
`steering` (ranking per mode, load-sharing apportionment), `stability`, `sharing` and
`protection` (the rules over time; copies for redundant and protected classes), `state`,
`decide`, `plan` (desired sets, diffs, versions, one action per flow), `explain`, `step`
(decide + plan).

Typical service loop for one MR (all values returned, nothing mutated):

    view, trigger = apply_metrics(view, message, now)        # or link state / binding event
    result = step(view, config, state, ledgers, now=now, trigger=trigger)
    state, ledgers = result.state, result.ledgers
    send(result.messages); publish(result.decision.explanation)
    schedule(result.decision.wake_at)                         # then step with TriggerKind.TIMER
    ledgers = acknowledge(ledgers, status)                    # on each PolicyStatus, then plan

Configuration (`config`), validated whole; `load(NsaConfig, data)` raises InvalidInput whose
problems name the dotted field:

- `NsaConfig(settings, profiles, preferences, rules)`
- `NsaSettings(method="utility"|"topsis", margin=0.1, dwell_s=10.0, fallbacks=True,
  max_metrics_age_s=None, scheme=1|2)`
- `ApplicationProfile(name, selectors, requirements, steering, order, capacities, shares, method,
  priority, user, mobile_routers)`; selectors are contract `Selector`s written as the MR sees
  outgoing traffic; `Requirements(min_bandwidth_bps, max_delay_ms, max_jitter_ms, max_loss,
  dscp)`; `SteeringMode`: best, priority (with `order` of BIDs/technologies), lowest-delay
  (also read as "smallest-delay"), cheapest, load-sharing (with `shares`), load-balancing
  (with `shares`: balance actions), redundant (with `paths`, 2..4: duplicate actions),
  priority-overflow (with `order` and `capacities`: priority actions);
  `protect=Protect.WHEN_AT_RISK` with `risk_fraction` (0.8) and `protect_hold_s` (10 s)
  duplicates a single-link class while its link nears a bound (`protection`)
- `Preferences(mobile_router, user, default, classes={class: Weights})`,
  `Weights(cost, delay, bandwidth, security)`
- `OperatorRules(default, classes={class: ClassRule(technologies, max_cost_per_mb,
  min_security)}, excluded=(Exclusion(bid, mobile_router, class_name),), security_levels,
  link_security)`

Inputs (`inputs`): `MrView(mobile_router, links, bindings)` updated by

- `apply_metrics(view, LinkMetrics, now) -> (MrView, Trigger)`
- `apply_link_state(view, LinkState, now) -> (MrView, Trigger)`
- `apply_binding_event(view, BindingEvent, now) -> (MrView, Trigger)`

Decision (`decide`):

- `decide(view, config, state: MrState, now, trigger) -> Decision(state, explanation,
  wake_at)`; start from `MrState(mobile_router=...)`; call again at `wake_at` with
  `Trigger(kind=TriggerKind.TIMER)` so a pending dwell time can elapse.
- `MrState.assignment() -> {class: (BID per selector, ...)}`; `()` means withdrawn.

Plan (`plan`), per (node, MR) ledgers of what each node acknowledged:

- `new_ledgers(mr, *, ha_node, mr_node, scheme) -> MrLedgers` (first plan: full Install)
- `plan(ledgers, config, state) -> (MrLedgers, messages)`: Update diffs (or Install when a
  resync is due), HA first; none for a node with a message in flight
- `acknowledge(ledgers, PolicyStatus) -> MrLedgers`; `greet(ledgers, Presence) -> MrLedgers`
  (a presence announcing another version than the node is known to hold triggers a
  resync); `resync(ledgers, node, config, state, reported_version) ->
  (MrLedgers, Install message)`; `lost(ledgers, node) -> MrLedgers` when an
  acknowledgement timed out (the next plan installs the whole set)
- `desired_policies(config, state, direction)`, `diff(current, desired) -> Update | None`

Both at once: `step(view, config, state, ledgers, *, now, trigger) -> Step(decision,
ledgers, messages)`.

Explanations (`explain`): `Explanation(mobile_router, at, trigger, classes)`, per class
`ClassExplanation(reason, moved, previous_bid, chosen_bid, previous_flows, chosen_flows,
detail, links=(LinkVerdict(bid, technology, score, merit, excluded_by),))`;
`render(explanation) -> str` for `multinet nsa explain MR`, `model_dump_json()` for MQTT.

Choices: with no eligible link a class's policies are withdrawn (its traffic takes the
default path); load sharing apportions selectors over links by weight (largest remainder) and
keeps flows where they are; ties go to the higher overall score, then the lower BID.

The rest of the core, which the service drives: `settings` (the `[nsa]` table as data),
`configstore` (per-router configuration with the retained preferences and rules, last good
version kept), `documents` (the NSA's own bus documents), `partition` (which replica owns a
router), `routes` (topic -> input kind and router), `engine` (every router's view, state,
ledgers and timers over `slot`s and `timers`; `materiality` says when a report cannot change
a decision), `calls` (planned messages -> one gateway call per router, and its answer ->
ledgers), `summary` (the log line of a decision). The I/O around it is in `services.nsa`.
"""

from services.nsa.core.config import (
    ApplicationProfile,
    Capacity,
    ClassRule,
    Exclusion,
    LinkSecurity,
    NsaConfig,
    NsaSettings,
    OperatorRules,
    Preferences,
    Protect,
    Requirements,
    ScoringMethod,
    Share,
    SteeringMode,
    Weights,
)
from services.nsa.core.decide import Decision, decide
from services.nsa.core.eligibility import Rule, Violation
from services.nsa.core.explain import ClassExplanation, Explanation, LinkVerdict, Reason, render
from services.nsa.core.frozen import load
from services.nsa.core.inputs import (
    Binding,
    BindingStatus,
    Link,
    MrView,
    Trigger,
    TriggerKind,
    apply_binding_event,
    apply_link_state,
    apply_metrics,
)
from services.nsa.core.plan import (
    MrLedgers,
    NodeLedger,
    acknowledge,
    desired_policies,
    diff,
    greet,
    lost,
    new_ledgers,
    plan,
    resync,
)
from services.nsa.core.state import ClassState, MrState
from services.nsa.core.step import Step, step

__all__ = [
    "ApplicationProfile",
    "Binding",
    "BindingStatus",
    "Capacity",
    "ClassExplanation",
    "ClassRule",
    "ClassState",
    "Decision",
    "Exclusion",
    "Explanation",
    "Link",
    "LinkSecurity",
    "LinkVerdict",
    "MrLedgers",
    "MrState",
    "MrView",
    "NodeLedger",
    "NsaConfig",
    "NsaSettings",
    "OperatorRules",
    "Preferences",
    "Protect",
    "Reason",
    "Requirements",
    "Rule",
    "ScoringMethod",
    "Share",
    "SteeringMode",
    "Step",
    "Trigger",
    "TriggerKind",
    "Violation",
    "Weights",
    "acknowledge",
    "apply_binding_event",
    "apply_link_state",
    "apply_metrics",
    "decide",
    "desired_policies",
    "diff",
    "greet",
    "load",
    "lost",
    "new_ledgers",
    "plan",
    "render",
    "resync",
    "step",
]
