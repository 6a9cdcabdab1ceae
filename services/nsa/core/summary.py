"""One log line per decision: the router, the trigger, and per class the move and the scores.

The full reasoning is on the bus (`mr/<mr>/decision`, `multinet nsa explain`); the log line is
what an operator greps: which class went to which BID, why, and how the links scored.
"""

from __future__ import annotations

from services.nsa.core.explain import ClassExplanation, Explanation


def summarise(explanation: Explanation) -> str:
    """`mr1 trigger metrics BID 2: video BID 1 -> BID 2 (dwell-elapsed; 1=0.81 2=0.93*)`."""
    trigger = explanation.trigger
    about = f" BID {trigger.bid}" if trigger.bid is not None else ""
    detail = f" ({trigger.detail})" if trigger.detail else ""
    classes = "; ".join(_class(c) for c in explanation.classes) or "no class"
    return f"{explanation.mobile_router} trigger {trigger.kind.value}{about}{detail}: {classes}"


def _class(entry: ClassExplanation) -> str:
    chosen = _flows(entry.chosen_flows)
    move = f"{_flows(entry.previous_flows)} -> {chosen}" if entry.moved else f"stays {chosen}"
    picked = set(entry.chosen_flows)
    scores = " ".join(
        f"{v.bid}=x:{v.excluded_by[0].rule.value}"
        if v.excluded_by
        else f"{v.bid}={v.score or 0.0:.2f}{'*' if v.bid in picked else ''}"
        for v in entry.links
    )
    return f"{entry.class_name} {move} ({entry.reason.value}; {scores or 'no link'})"


def _flows(flows: tuple[int, ...]) -> str:
    if not flows:
        return "default path"
    distinct = sorted(set(flows))
    return f"BID {distinct[0]}" if len(distinct) == 1 else "BIDs " + ",".join(map(str, flows))
