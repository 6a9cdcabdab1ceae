"""`multinet testbed run --simulate`: a scenario's decisions without root, namespaces or broker.

The scenario's timeline runs on the simulated world (`simworld`): each step advances the fake
clock to its `at`, applies its action as the inputs it would cause, then advances through the
queued inputs until its conditions hold, judged from the simulated data plane ("which BID does
the stream get at the HA, and its ACKs at the MR?") and the simulated bus. Each NSA decision
that sent policies or moved a class is printed with its explanation; a condition that would
not hold within the step's timeout is reported and makes the exit status 1.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.contracts.messages import BindingEvent, LinkMetrics, LinkState, PolicyStatus
from services.contracts.policy import Flush, Install, Policy, PolicyMessage, Update
from services.monitor.config import TraceConfig
from services.nsa.core import render
from services.testbed import addressing as a
from services.testbed.actions import documents
from services.testbed.conditions import NODE_IDS
from services.testbed.scenario import (
    Action,
    Attach,
    CareOf,
    Carrier,
    Condition,
    Decider,
    Detach,
    Enforced,
    FallbackSeen,
    Flows,
    FlushPolicies,
    InstallPolicies,
    LinkStateSeen,
    MetricsSeen,
    PublishPreferences,
    PublishRules,
    Scenario,
    UpdatePolicies,
    trace_path,
)
from services.testbed.simworld import World
from services.testbed.timeline import EVENT_KINDS


def _policy(policy: Policy) -> str:
    action = policy.action
    bids = getattr(action, "bids", None)
    if bids is None:
        return f"{policy.id} drop"
    chain = bids()
    more = f" (fallbacks {', '.join(map(str, chain[1:]))})" if len(chain) > 1 else ""
    return f"{policy.id} -> BID {chain[0]}{more}"


def summary(message: PolicyMessage) -> str:
    """One line for a policy document: node, version, operation and entries."""
    op = message.operation
    if isinstance(op, Install):
        body = ", ".join(_policy(p) for p in op.policies) or "(empty set)"
    elif isinstance(op, Update):
        items = [f"insert {_policy(p)}" for p in op.insert]
        items += [f"replace {_policy(p)}" for p in op.replace]
        items += [f"delete {d}" for d in op.delete]
        body = ", ".join(items)
    else:
        body = "all policies"
    return f"-> {message.node} v{message.version} {op.kind}: {body}"


class Simulation:
    """One simulated run of a scenario, printing as it goes."""

    def __init__(
        self, scenario: Scenario, decider: Decider, world: World, say: Callable[[str], None]
    ) -> None:
        self.scenario = scenario
        self.decider = decider
        self.world = world
        self.say = say
        self.shown = 0
        self.quiet = 0
        self.versions = {a.HA_NODE: 0, a.MR_NODE: 0}
        self.failed = 0
        self.plane = ""

    def line(self, text: str) -> None:
        self.say(f"[{self.world.now:7.2f} s] {text}")

    def decisions(self) -> None:
        """Print the NSA decisions made since the last call that sent or moved something."""
        for decided in self.world.decisions[self.shown :]:
            if not decided.messages and not decided.explanation.moves():
                self.quiet += 1
                continue
            self.say(f"{'':12} NSA at {decided.at:.2f} s:")
            for text in render(decided.explanation).splitlines():
                self.say(f"{'':14}{text}")
            for message in decided.messages:
                self.say(f"{'':14}{summary(message)}")
        self.shown = len(self.world.decisions)

    def data_plane(self) -> str:
        down, up = self.world.bid_of_stream(self.scenario.stream.port)
        names = {link.bid: link.interface for link in a.MR_LINKS}

        def where(bid: int) -> str:
            name = names.get(bid, "?")
            return (
                f"BID {bid} ({name}{'' if self.world.carrier.get(name, True) else ', down: lost'})"
            )

        return f"stream at the HA -> {where(down)}; ACKs at the MR -> {where(up)}"

    def act(self, action: Action) -> None:
        w = self.world
        if isinstance(action, InstallPolicies | UpdatePolicies | FlushPolicies):
            self._soap(action)
        elif isinstance(action, PublishRules):
            w.configure(w.config.model_copy(update={"rules": action.rules}))
        elif isinstance(action, PublishPreferences):
            # The document replaces every entry of the router; global entries stay.
            kept = [p for p in w.config.preferences if p.mobile_router != a.MOBILE_ROUTER]
            entries = [
                e if e.mobile_router else e.model_copy(update={"mobile_router": a.MOBILE_ROUTER})
                for e in action.entries
            ]
            prefs = (*kept, *entries)
            w.configure(w.config.model_copy(update={"preferences": prefs}))
        elif isinstance(action, Detach):
            w.detach(action.link)
        elif isinstance(action, Attach):
            w.attach(action.link, action.router)
        elif isinstance(action, Carrier):
            w.set_carrier(action.link, action.up)
        elif isinstance(action, CareOf):
            w.change_care_of(action.link, action.address)

    def _soap(self, action: InstallPolicies | UpdatePolicies | FlushPolicies) -> None:
        from services.contracts import policy_xml

        if isinstance(action, InstallPolicies):
            operation: Install | Update | Flush = Install(policies=action.policies)
        elif isinstance(action, UpdatePolicies):
            operation = Update(insert=action.insert, replace=action.replace, delete=action.delete)
        else:
            operation = Flush()
        self.versions = {node: version + 1 for node, version in self.versions.items()}
        for document in documents(operation, self.versions):
            message = policy_xml.parse(document.encode())
            status = self.world.deliver(message)
            reasons = "; ".join(r.reason for r in status.refusals)
            outcome = status.result + (f" ({reasons})" if reasons else "")
            self.say(f"{'':12} SOAP {summary(message)}: {outcome}")

    def holds(self, condition: Condition, since: float) -> bool:
        """Whether `condition` holds in the simulated world since `since`."""
        w = self.world
        recent = [(kind, item) for at, kind, item in w.log if at >= since]
        if isinstance(condition, Flows):
            down, up = w.bid_of_stream(self.scenario.stream.port)
            link = a.mr_link(condition.interface)
            wanted = {"rx": (down,), "tx": (up,), "both": (down, up)}[condition.direction]
            return w.carrier[condition.interface] and all(b == link.bid for b in wanted)
        if isinstance(condition, Enforced):
            nodes = {NODE_IDS[n] for n in condition.nodes}
            done = {
                i.node for k, i in recent if isinstance(i, PolicyStatus) and i.result == "applied"
            }
            return nodes <= done
        if isinstance(condition, FallbackSeen):
            node = NODE_IDS[condition.node]
            return any(
                isinstance(i, PolicyStatus) and i.node == node and i.result == "fallback"
                for _, i in recent
            )
        if isinstance(condition, LinkStateSeen):
            return any(
                isinstance(i, LinkState)
                and i.interface == condition.interface
                and i.up == condition.up
                for _, i in recent
            )
        if isinstance(condition, MetricsSeen):
            return any(_crossed(condition, i) for _, i in recent)
        return any(
            isinstance(i, BindingEvent) and i.bid == condition.bid and i.event == condition.event
            for _, i in recent
        )

    def run(self) -> int:
        w = self.world
        self.say(
            f"simulating {self.scenario.name} with the {self.decider.value} decider: the NSA "
            "core on a fake clock, PREM enforcers on the memory back end, no kernel, no broker"
        )
        w.start()
        self.decisions()
        reference = 0.0
        for step in self.scenario.steps_for(self.decider):
            if step.at is not None:
                w.advance(step.at)
                self.decisions()
            self.line(step.title() + (f" [{step.do.action}]" if step.do is not None else ""))
            if step.do is not None:
                self.act(step.do)
                reference = w.now
            for condition in step.wait:

                def holds(c: Condition = condition, since: float = reference) -> bool:
                    return self.holds(c, since)

                ok = w.advance(w.now + step.timeout_s, holds)
                if ok and condition.until in EVENT_KINDS:
                    reference = w.now
                self.decisions()
                verdict = "holds" if ok else f"would NOT hold within {step.timeout_s:g} s"
                self.say(f"{'':12} wait {condition.until} {_args(condition)}: {verdict}")
                self.failed += 0 if ok else 1
            self.decisions()
            plane = self.data_plane()
            if plane != self.plane:
                self.say(f"{'':12} {plane}")
                self.plane = plane
        if self.scenario.end_at is not None:
            w.advance(self.scenario.end_at)
            self.decisions()
        self.say(
            f"done at {w.now:.2f} s: {len(w.decisions)} NSA decisions ({self.quiet} kept every "
            f"class where it was and are not shown); {self.failed} condition(s) would not hold"
        )
        return 1 if self.failed else 0


def _crossed(condition: MetricsSeen, item: object) -> bool:
    if not isinstance(item, LinkMetrics) or item.interface != condition.interface:
        return False
    value = getattr(item, condition.metric)
    if value is None:
        return False
    return (
        bool(value < condition.below)
        if condition.below is not None
        else bool(condition.above is not None and value > condition.above)
    )


def _args(condition: Condition) -> str:
    data: dict[str, Any] = condition.model_dump(mode="json", exclude={"until"})
    return " ".join(f"{k}={v}" for k, v in data.items())


def simulate(
    scenario: Scenario,
    requested: Decider | None,
    scenario_file: Path | None = None,
    say: Callable[[str], None] = print,
) -> int:
    """Run `scenario` in the simulated world; 0 when every condition would hold."""
    decider = requested or (Decider.NSA if Decider.NSA in scenario.deciders else Decider.SOAP)
    if decider not in scenario.deciders:
        say(f"scenario {scenario.name} does not run with the {decider.value} decider")
        return 2
    base = scenario_file or Path(".")
    traces: dict[str, TraceConfig] = {
        link: TraceConfig(file=str(trace_path(base, name)))
        for link, name in scenario.traces.items()
    }
    world = World(scenario.nsa, traces, use_nsa=decider is Decider.NSA)
    # The enforcers' refusals are printed with each delivery; their log lines would repeat them.
    logging.getLogger("services.prem").addHandler(logging.NullHandler())
    logging.getLogger("services.prem").propagate = False
    try:
        return Simulation(scenario, decider, world, say).run()
    finally:
        world.close()
