"""Operator pins: one class of one mobile router held on a BID for a time (pure).

A pin is an input of the decision, like the operator rules: `Pin(class_name, bid, user,
since, until, reason)`. `check` says whether a request may become a pin (the class is one of
the router's, the BID one of its links), `overridden` applies the router's pins to a decision
that was taken as if there were none:

- a pin in force puts every flow of its class on its BID (a plain forward: no balance shares,
  no copies, no overflow tiers), whatever the scores, the hysteresis or the operator rules
  say: the operator asked for exactly that. The explanation's reason is `operator-override`,
  its detail `operator override by <user> until <time>`;
- unless the BID cannot carry anything now (link down, no live binding, a handover under way,
  never measured): then the class keeps the NSA's own choice (the fallbacks), and the detail
  says the pin is not in force and why; it comes back into force when the BID does;
- the decision's `wake_at` includes each pin's end, so the engine decides again then; a pin
  whose `until` has passed is no longer applied (`active`), and the class is decided from where
  the pin left it, with the usual hysteresis.

Pins are not persisted: a restarted replica has none (they are not retained on the bus).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from pydantic import Field

from services.contracts.errors import Problem
from services.contracts.messages import PinRequest
from services.contracts.policy import Bid
from services.nsa.core.config import NsaConfig
from services.nsa.core.decide import WAKE_SLACK_S, Decision
from services.nsa.core.eligibility import Rule
from services.nsa.core.explain import ClassExplanation, Reason
from services.nsa.core.frozen import Frozen
from services.nsa.core.inputs import MrView
from services.nsa.core.state import ClassState

#: The rules under which a pinned BID cannot carry the class: the pin waits, the NSA decides.
UNUSABLE = frozenset({Rule.NO_METRICS, Rule.LINK_DOWN, Rule.NO_BINDING, Rule.HANDOVER})


class Pin(Frozen):
    """One class held on one BID by an operator until `until` (epoch seconds)."""

    class_name: str
    bid: Bid
    user: str
    since: float
    until: float
    reason: str = Field(default="", max_length=200)

    def describe(self) -> str:
        """`operator override by <user> until <UTC time>`."""
        return f"operator override by {self.user} until {when(self.until)}"


def when(at: float) -> str:
    """An epoch time as ISO 8601 UTC to the second (`2024-05-01T12:00:00Z`)."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check(request: PinRequest, view: MrView, config: NsaConfig) -> Problem | None:
    """Why `request` cannot be applied to its router now (None: it can); the problem names
    the field. A release needs no known BID; a pin needs a BID the router has a link or a
    binding for."""
    if request.mobile_router != view.mobile_router:
        return Problem(
            f"is {request.mobile_router!r}, the topic's router is {view.mobile_router!r}",
            field="mobile_router",
        )
    classes = [p.name for p in config.profiles_for(view.mobile_router)]
    if request.class_name not in classes:
        return Problem(
            f"{view.mobile_router} has no class {request.class_name!r} "
            f"(its classes: {', '.join(sorted(classes)) or 'none'})",
            field="class_name",
        )
    if request.release:
        return None
    bids = view.bids()
    if request.bid not in bids:
        known = ", ".join(str(b) for b in bids) or "none yet"
        return Problem(
            f"BID {request.bid} is not one of {view.mobile_router}'s (known: {known})",
            field="bid",
        )
    return None


def pin_of(request: PinRequest, now: float) -> Pin:
    """The pin a checked (not release) request makes, from `now` for its duration."""
    assert request.bid is not None
    assert request.duration_s is not None
    return Pin(
        class_name=request.class_name,
        bid=request.bid,
        user=request.user,
        since=now,
        until=now + request.duration_s,
        reason=request.reason,
    )


def active(pins: Mapping[str, Pin], now: float) -> dict[str, Pin]:
    """The pins still in force at `now`."""
    return {name: pin for name, pin in pins.items() if pin.until > now}


def overridden(
    decision: Decision, config: NsaConfig, pins: Mapping[str, Pin], now: float
) -> Decision:
    """`decision` with each pin in force applied (see the module docstring)."""
    pins = active(pins, now)
    if not pins:
        return decision
    mobile_router = decision.explanation.mobile_router
    selectors = {p.name: len(p.selectors) for p in config.profiles_for(mobile_router)}
    classes = dict(decision.state.classes)
    entries: list[ClassExplanation] = []
    for entry in decision.explanation.classes:
        pin = pins.get(entry.class_name)
        if pin is None or entry.class_name not in classes:
            entries.append(entry)
            continue
        blocked = _unusable(entry, pin.bid)
        if blocked:
            note = f"{pin.describe()} not in force: BID {pin.bid} {blocked}"
            detail = f"{note}; {entry.detail}" if entry.detail else note
            entries.append(entry.model_copy(update={"detail": detail}))
            continue
        state = classes[entry.class_name]
        flows = (pin.bid,) * selectors.get(entry.class_name, len(state.flows))
        moved = flows != entry.previous_flows
        classes[entry.class_name] = ClassState.model_construct(
            flows=flows,
            fallbacks=state.fallbacks,
            moved_at=now if moved else state.moved_at,
            challenger=None,
            challenger_since=None,
            awaiting=(),
            went_down=None,
            members=(),
            eligible_since={},
            displaced={},
            balance=(),
            copies=(),
            tiers=(),
            protected_since=None,
            healthy_since=None,
        )
        detail = pin.describe() + (f" ({pin.reason})" if pin.reason else "")
        entries.append(
            entry.model_copy(
                update={
                    "reason": Reason.OPERATOR_OVERRIDE,
                    "moved": moved,
                    "chosen_bid": pin.bid,
                    "chosen_flows": flows,
                    "chosen_shares": (),
                    "chosen_copies": (),
                    "chosen_tiers": (),
                    "detail": detail,
                }
            )
        )
    ends = [pin.until + WAKE_SLACK_S for pin in pins.values()]
    wake = min([*ends, *([] if decision.wake_at is None else [decision.wake_at])])
    return Decision.model_construct(
        state=decision.state.model_copy(update={"classes": classes}),
        explanation=decision.explanation.model_copy(update={"classes": tuple(entries)}),
        wake_at=wake,
    )


def _unusable(entry: ClassExplanation, bid: int) -> str:
    """Why `bid` cannot carry the class now ('' when it can)."""
    for verdict in entry.links:
        if verdict.bid == bid:
            broken = [v for v in verdict.excluded_by if v.rule in UNUSABLE]
            return f"is unusable ({broken[0].rule.value})" if broken else ""
    return "is unknown"
