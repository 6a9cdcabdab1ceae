"""Run a scenario's steps against the live test bed: wait for `at`, act, wait for conditions.

Each step's conditions count only what happened after its reference: the last action, or
the last world event a step waited for (a link state, a binding event, a metrics bound), so
"the radio degraded" followed by "enforced at the HA" means the enforcement that followed.

Every wait is a poll with a deadline (20 ms steps) that also checks, on each turn, that no
service died (a dead service fails the run at once, with its log) and prints a line of packet
rates once a second. A condition that does not hold before its step's deadline raises
`StepFailed` naming the step and the condition, with what was last seen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from services.testbed.actions import ActionContext, ActionRecord, perform
from services.testbed.conditions import LINKS, Met, check, deltas
from services.testbed.counters import CounterSampler
from services.testbed.recorder import Recorder
from services.testbed.scenario import Condition, Step

_POLL_S = 0.02
#: Conditions that are events in the world (not effects of the last action): once one is
#: seen, later steps measure from it, e.g. "radio degraded" -> "enforced at the HA".
EVENT_KINDS = frozenset({"link-state", "binding", "metrics"})
_RATE_EVERY_S = 1.0


@dataclass
class StepResult:
    """What happened in one step."""

    index: int
    step: Step
    started: float
    reference: float = 0.0  # the last event before this step's conditions (or t0)
    action: ActionRecord | None = None
    met: list[tuple[Condition, Met]] = field(default_factory=list)
    finished: float = 0.0

    def marker(self) -> float:
        """Where the step's label goes on the time axis: its action, else its `at` time, else
        the moment its last condition held (t2 "enforced at the HA" sits where it happened)."""
        if self.action is not None:
            return self.action.started
        if self.step.at is not None:
            return self.started
        if self.met:
            return max(m.at for _, m in self.met)
        return self.started


class StepFailed(RuntimeError):  # noqa: N818 - the name reads as what happened
    """A step's conditions did not hold before its deadline."""

    def __init__(self, index: int, step: Step, pending: list[Condition], seen: str) -> None:
        self.index = index
        self.step = step
        names = ", ".join(c.model_dump_json() for c in pending)
        super().__init__(
            f"step {index} ({step.title()}) timed out after {step.timeout_s:g} s waiting for "
            f"{names}; {seen}"
        )


@dataclass
class Clock:
    """The run's time origin (t0: the stream's start) and its progress output."""

    t0: float
    say: Callable[[str], None]
    sampler: CounterSampler
    alive: Callable[[], None]
    _last_rates: float = 0.0

    def rel(self, at: float) -> float:
        """Seconds since t0."""
        return at - self.t0

    def line(self, text: str, at: float | None = None) -> None:
        """One progress line stamped with its time since t0."""
        stamp = self.rel(time.monotonic() if at is None else at)
        self.say(f"[{stamp:+7.2f} s] {text}")

    def tick(self) -> None:
        """One turn of a wait: services alive?, a rates line when due, a short sleep."""
        self.alive()
        now = time.monotonic()
        if now - self._last_rates >= _RATE_EVERY_S:
            self._last_rates = now
            self.say(f"{'':12} {rates(self.sampler, now)}")
        time.sleep(_POLL_S)

    def sleep_until(self, at: float) -> None:
        """Wait (ticking) until monotonic time `at`."""
        while time.monotonic() < at:
            self.tick()


def rates(sampler: CounterSampler, now: float, span_s: float = 1.0) -> str:
    """Packets per second per link over the last second, e.g. 'eth0 rx 170 tx 85 | ...'."""
    recent = sampler.samples(since=now - span_s - 0.05)
    if len(recent) < 2:
        return "(no counter samples yet)"
    seconds = recent[-1].at - recent[0].at or 1.0
    parts = []
    for name in LINKS:
        rx = sum(c[name] for _, c in deltas(recent, "rx")) / seconds
        tx = sum(c[name] for _, c in deltas(recent, "tx")) / seconds
        parts.append(f"{name} rx {rx:5.0f} tx {tx:5.0f}")
    return " | ".join(parts) + " pkt/s"


def run_steps(
    steps: tuple[Step, ...],
    ctx: ActionContext,
    recorder: Recorder,
    sampler: CounterSampler,
    clock: Clock,
) -> list[StepResult]:
    """Run the steps in order; return what each did and saw (raises StepFailed)."""
    results: list[StepResult] = []
    reference = clock.t0
    for index, step in enumerate(steps):
        if step.at is not None:
            clock.sleep_until(clock.t0 + step.at)
        result = StepResult(index, step, time.monotonic())
        if step.do is not None:
            result.action = perform(step.do, ctx)
            reference = result.action.started
            took = (result.action.returned - result.action.started) * 1000
            clock.line(f"{step.title()} [{step.do.action} {took:.0f} ms]", result.action.started)
        result.reference = reference
        if step.do is None and not step.wait:
            clock.line(step.title())
        prefix = "  " if step.do is not None else f"{step.title()}: "
        result.met = _wait(
            step=step,
            index=index,
            reference=reference,
            recorder=recorder,
            sampler=sampler,
            clock=clock,
            prefix=prefix,
        )
        events = [met.at for condition, met in result.met if condition.until in EVENT_KINDS]
        reference = max([reference, *events])
        result.finished = time.monotonic()
        results.append(result)
    return results


def _wait(
    *,
    step: Step,
    index: int,
    reference: float,
    recorder: Recorder,
    sampler: CounterSampler,
    clock: Clock,
    prefix: str,
) -> list[tuple[Condition, Met]]:
    pending = list(step.wait)
    met: list[tuple[Condition, Met]] = []
    deadline = time.monotonic() + step.timeout_s
    while pending:
        heard, samples = recorder.since(reference), sampler.samples(since=reference - 0.1)
        for condition in list(pending):
            found = check(condition, reference, heard, samples)
            if found is not None:
                pending.remove(condition)
                met.append((condition, found))
                clock.line(f"{prefix}{describe(condition, found, reference)}", found.at)
        if not pending:
            break
        if time.monotonic() > deadline:
            raise StepFailed(index, step, pending, rates(sampler, time.monotonic()))
        clock.tick()
    return met


def describe(condition: Condition, met: Met, reference: float) -> str:
    """A short account of a condition that held, with its delay from the reference."""
    after = (met.at - reference) * 1000
    kind = condition.until
    if kind == "enforced":
        nodes = ", ".join(
            f"{node} v{info['version']} +{(info['at'] - reference) * 1000:.0f} ms"
            for node, info in met.detail.items()
        )
        return f"enforced: {nodes}"
    if kind == "flows":
        return f"flows on {getattr(condition, 'interface', '?')} (held +{after:.0f} ms)"
    return f"{kind} seen +{after:.0f} ms"
