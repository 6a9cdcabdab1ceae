"""Data budgets at the NSA: bulk classes leave a link whose budget is mostly used."""

from __future__ import annotations

from services.nsa.core.decide import decide
from services.nsa.core.documents import DecisionRecord, budgets_of
from services.nsa.core.eligibility import Rule, violations
from services.nsa.core.inputs import Trigger, TriggerKind
from services.nsa.core.materiality import tolerance
from services.nsa.core.state import MrState
from tests.nsa.factories import MR, config, metrics, profile, view_of

GB = 10**9


def test_a_bulk_class_leaves_a_link_over_its_budget_share() -> None:
    cfg = config(profile("backup", bulk=True), profile("video", ports=(5002,)))
    view = view_of(
        {
            1: {"budget_bytes": 10 * GB, "budget_used_bytes": int(8.5 * GB)},
            2: {"budget_bytes": 10 * GB, "budget_used_bytes": 7 * GB},
            3: {},
        }
    )
    backup, video = cfg.profiles
    (found,) = violations(view, 1, backup, cfg, 0.0)
    assert found.rule is Rule.BUDGET
    assert found.detail == "if1 at 85% of 10 GB > 80%"
    assert violations(view, 2, backup, cfg, 0.0) == ()  # 70 %
    assert violations(view, 3, backup, cfg, 0.0) == ()  # no budget
    assert violations(view, 1, video, cfg, 0.0) == ()  # not bulk


def test_the_share_is_configured() -> None:
    cfg = config(profile("backup", bulk=True), settings={"bulk_budget_share": 0.9})
    view = view_of({1: {"budget_bytes": 10 * GB, "budget_used_bytes": int(8.5 * GB)}})
    assert violations(view, 1, cfg.profiles[0], cfg, 0.0) == ()


def test_the_decision_moves_the_bulk_class_and_records_the_budgets() -> None:
    cfg = config(profile("backup", bulk=True))
    view = view_of(
        {
            1: {"budget_bytes": 10 * GB, "budget_used_bytes": int(8.5 * GB), "rtt_ms": 5},
            2: {"rtt_ms": 80},
        }
    )
    decision = decide(view, cfg, MrState(mobile_router=MR), 0.0, Trigger(kind=TriggerKind.START))
    entry = decision.explanation.for_class("backup")
    assert entry.chosen_bid == 2
    (budget,) = budgets_of(view)
    assert (budget.bid, budget.state) == (1, "if1 at 85% of 10 GB")
    record = DecisionRecord(sender="nsa", replica=0, explanation=decision.explanation)
    assert "budgets" not in record.model_dump_json()  # no budget: written as before


def test_crossing_the_share_is_material_and_moving_within_it_is_not() -> None:
    cfg = config(profile("backup", bulk=True))
    view = view_of({1: {"budget_bytes": 10 * GB, "budget_used_bytes": 5 * GB}, 2: {}})
    decision = decide(view, cfg, MrState(mobile_router=MR), 0.0, Trigger(kind=TriggerKind.START))
    tol = tolerance(view, cfg, decision, 0.0)
    same = metrics(1, budget_bytes=10 * GB, budget_used_bytes=6 * GB)
    over = metrics(1, budget_bytes=10 * GB, budget_used_bytes=9 * GB)
    assert tol.admits(same, 1.0, 0.0)
    assert not tol.admits(over, 1.0, 0.0)
