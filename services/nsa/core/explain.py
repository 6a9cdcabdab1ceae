"""Why each class uses the link it uses: a typed record per decision, as JSON or as text.

The record is a pydantic model, so the service publishes `model_dump_json()` on the bus and
`multinet nsa explain MR` prints `render(explanation)`. It carries the trigger of the decision
and, per class, every link with its score or the rules that excluded it, the previous and the
chosen assignment, and the reason for moving or staying.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from services.contracts.policy import Bid, NodeId
from services.nsa.core.config import ScoringMethod, SteeringMode
from services.nsa.core.eligibility import Violation
from services.nsa.core.frozen import Frozen
from services.nsa.core.inputs import Trigger


class Reason(StrEnum):
    """Why a class is where it is after a decision."""

    INITIAL = "initial"  # had no link, now has one
    KEPT = "kept"  # no challenger beats the current link by the margin
    CHALLENGER_PENDING = "challenger-pending"  # a better link is waiting out the dwell time
    DWELL_ELAPSED = "dwell-elapsed"
    REQUIREMENT_VIOLATED = "requirement-violated"  # current link down, unbound or failing a rule
    HANDOVER_STARTED = "handover-started"
    HANDOVER_COMPLETED = "handover-completed"
    REBALANCED = "rebalanced"  # load sharing: the set of links sharing the flows changed
    NO_ELIGIBLE_LINK = "no-eligible-link"  # policies withdrawn: default path
    PROTECTED = "protected"  # protect when-at-risk: its link nears a bound, copies on another
    PROTECTION_OFF = "protection-off"  # its link stayed healthy for the hold time
    OPERATOR_OVERRIDE = "operator-override"  # an operator's pin holds it on a BID (`pins`)


class LinkVerdict(Frozen):
    """One link as one class saw it: its score, or why it was excluded."""

    bid: Bid
    technology: str | None = None
    score: float | None = Field(default=None, description="None when excluded")
    merit: float | None = Field(default=None, description="what the steering mode compared")
    excluded_by: tuple[Violation, ...] = ()

    @property
    def eligible(self) -> bool:
        """A link with no violation may carry the class."""
        return not self.excluded_by


class ClassExplanation(Frozen):
    """The decision for one class.

        `previous_flows` / `chosen_flows` hold one BID per selector (empty: no policies);
        `previous_bid` / `chosen_bid` are the single BID of all flows, None when there are none
        or (load sharing) they use several. `chosen_shares` (load balancing: every flow's policy
        balances over these (BID, weight)) and `chosen_copies` (redundant or protected: a copy of
        every packet goes on each) and `chosen_tiers` (priority-overflow: new flows fill each BID up
    to its capacity, then the next) say what the policies do beyond forwarding.
    """

    class_name: str
    steering: SteeringMode
    method: ScoringMethod
    reason: Reason
    moved: bool
    previous_bid: Bid | None
    chosen_bid: Bid | None
    previous_flows: tuple[Bid, ...]
    chosen_flows: tuple[Bid, ...]
    detail: str = ""
    links: tuple[LinkVerdict, ...] = ()
    chosen_shares: tuple[tuple[Bid, int], ...] = ()
    chosen_copies: tuple[Bid, ...] = ()
    chosen_tiers: tuple[tuple[Bid, int | None], ...] = Field(
        default=(),
        description="priority-overflow: (BID, capacity in bit/s) filled in order; last None",
    )


class Explanation(Frozen):
    """One decision for one mobile router."""

    mobile_router: NodeId
    at: float
    trigger: Trigger
    classes: tuple[ClassExplanation, ...] = ()

    def moves(self) -> int:
        """How many classes changed their assignment in this decision."""
        return sum(1 for c in self.classes if c.moved)

    def for_class(self, name: str) -> ClassExplanation:
        """The explanation of one class (KeyError when the class was not decided)."""
        for entry in self.classes:
            if entry.class_name == name:
                return entry
        raise KeyError(name)


def single_bid(flows: tuple[int, ...]) -> int | None:
    """The BID every flow uses, or None (no flows, or several BIDs)."""
    distinct = set(flows)
    return next(iter(distinct)) if len(distinct) == 1 else None


def render(explanation: Explanation) -> str:
    """Plain text for a terminal, one block per class."""
    trigger = explanation.trigger
    about = f" BID {trigger.bid}" if trigger.bid is not None else ""
    extra = f" ({trigger.detail})" if trigger.detail else ""
    lines = [
        f"mobile router {explanation.mobile_router} at t={explanation.at:g}: "
        f"trigger {trigger.kind.value}{about}{extra}"
    ]
    for entry in explanation.classes:
        lines += _render_class(entry)
    return "\n".join(lines)


def _render_class(entry: ClassExplanation) -> list[str]:
    change = f"{_flows(entry.previous_flows)} -> {_flows(entry.chosen_flows)}"
    if not entry.moved:
        change = f"stays on {_flows(entry.chosen_flows)}"
    if entry.chosen_shares:
        change += " balanced over " + ", ".join(f"BID {b}:{w}" for b, w in entry.chosen_shares)
    if entry.chosen_copies:
        change += " copied to " + ", ".join(f"BID {b}" for b in entry.chosen_copies)
    if entry.chosen_tiers:
        change += " overflowing to " + ", ".join(f"BID {b}" for b, _ in entry.chosen_tiers[1:])
    detail = f": {entry.detail}" if entry.detail else ""
    reason = entry.reason.value
    named = reason.replace("-", " ")
    if entry.detail.startswith((named + ":", named + " by ")):
        reason, detail = entry.detail, ""  # a detail that names its reason ("protected: ...")
    lines = [
        f"  class {entry.class_name} [{entry.steering.value}, {entry.method.value}] "
        f"{change} ({reason}{detail})"
    ]
    chosen = {
        *entry.chosen_flows,
        *entry.chosen_copies,
        *(b for b, _ in entry.chosen_shares),
        *(b for b, _ in entry.chosen_tiers),
    }
    for link in entry.links:
        tech = f"{link.technology or '?':<8}"
        if link.excluded_by:
            rules = "; ".join(f"{v.rule.value}: {v.detail}" for v in link.excluded_by)
            lines.append(f"    BID {link.bid:<5} {tech} excluded: {rules}")
            continue
        mark = "  <- chosen" if link.bid in chosen else ""
        merit = "" if link.merit == link.score else f" merit {_num(link.merit)}"
        lines.append(f"    BID {link.bid:<5} {tech} score {_num(link.score)}{merit}{mark}")
    return lines


def _flows(flows: tuple[int, ...]) -> str:
    if not flows:
        return "default path"
    bid = single_bid(flows)
    if bid is not None:
        return f"BID {bid}"
    return "BIDs " + ",".join(str(b) for b in flows)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
