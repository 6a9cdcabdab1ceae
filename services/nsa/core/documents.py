"""The NSA's own bus documents: preferences and operator rules in, decisions out.

Each carries the common envelope (schema version, sender, timestamp), like every message on
the bus. Preferences and rules are retained and replace the whole previous document, so the
last one published is the truth; an empty retained payload (the retained message deleted)
means "back to the settings file". Decisions are retained per mobile router, so a late reader
(`multinet nsa explain`) finds the current reasoning at once.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from services.contracts.messages import Envelope
from services.contracts.policy import NodeId
from services.nsa.core.config import OperatorRules, Preferences
from services.nsa.core.eligibility import budget_state
from services.nsa.core.explain import Explanation
from services.nsa.core.frozen import Frozen
from services.nsa.core.inputs import MrView


class PreferencesDocument(Envelope):
    """Every preference entry of one mobile router (`mr/<mr>/preferences`, retained).

    Entries scope to the router and optionally one of its users; an entry that names no
    mobile router is taken as this one's, an entry naming another one is refused (a router's
    topic cannot set another router's weights).
    """

    kind: Literal["preferences"] = "preferences"
    mobile_router: NodeId
    entries: tuple[Preferences, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _scope_entries(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("entries"), list | tuple):
            return data
        router = data.get("mobile_router")
        entries = [
            {**entry, "mobile_router": router}
            if isinstance(entry, dict) and entry.get("mobile_router") is None
            else entry
            for entry in data["entries"]
        ]
        return {**data, "entries": entries}

    @model_validator(mode="after")
    def _own_router(self) -> PreferencesDocument:
        for index, entry in enumerate(self.entries):
            if entry.mobile_router != self.mobile_router:
                raise ValueError(
                    f"entries[{index}] is for mobile router {entry.mobile_router!r}, "
                    f"this document for {self.mobile_router!r}"
                )
        return self


class RulesDocument(Envelope):
    """The operator's rules for every mobile router (`operator/rules`, retained)."""

    kind: Literal["operator-rules"] = "operator-rules"
    rules: OperatorRules


class LinkBudget(Frozen):
    """A budgeted link's state as the decision saw it (for `multinet nsa explain`)."""

    bid: int
    state: str = Field(description="`eth1 at 85% of 10 GB`")
    used_bytes: int
    budget_bytes: int
    period_end: float | None = None


class DecisionRecord(Envelope):
    """One decision of one replica for one mobile router (`mr/<mr>/decision`, retained).

    `sender` is the replica's name; `replica` its index, so that a reader can tell which
    replica owns the router.
    """

    kind: Literal["nsa-decision"] = "nsa-decision"
    replica: int = Field(ge=0)
    explanation: Explanation
    budgets: tuple[LinkBudget, ...] = Field(default=(), exclude_if=lambda value: not value)


def budgets_of(view: MrView) -> tuple[LinkBudget, ...]:
    """Every link of the view that reports a data budget, by BID."""
    found = []
    for bid in sorted(view.links):
        link = view.links[bid]
        if link.budget_bytes is None or link.budget_used_bytes is None:
            continue
        found.append(
            LinkBudget(
                bid=bid,
                state=budget_state(link),
                used_bytes=link.budget_used_bytes,
                budget_bytes=link.budget_bytes,
                period_end=link.budget_period_end,
            )
        )
    return tuple(found)
