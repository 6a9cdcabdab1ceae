"""Explanations: a typed record per decision, rendered as text and carried as JSON."""

from __future__ import annotations

from services.contracts.messages import BindingEventKind
from services.nsa.core import Explanation, Reason, render
from tests.nsa.factories import Sim, config, profile


def explained_sim() -> Sim:
    cfg = config(
        profile("video", requirements={"max_loss": 0.02}),
        profile("voip", ports=(5060,)),
        rules={"classes": {"video": {"technologies": ["wlan", "lte"]}}},
        settings={"dwell_s": 10},
    )
    sim = Sim(cfg)
    sim.start(0.0, {1: {}, 2: {"rtt_ms": 40}, 3: {}})
    return sim


def test_render_names_trigger_scores_exclusions_and_choice() -> None:
    sim = explained_sim()
    sim.binding(5.0, 2, BindingEventKind.HANDOVER_STARTED)
    text = render(sim.steps[-1].decision.explanation)
    print(text)
    lines = text.splitlines()
    assert lines[0] == "mobile router mr1 at t=5: trigger handover-started BID 2 (handover-started)"
    assert lines[1].startswith("  class video [best, utility] BID 2 -> BID 1 (handover-started")
    assert "    BID 2     lte      excluded: handover: handover in progress" in lines
    assert any("BID 3     umts     excluded: technology-forbidden" in line for line in lines)
    assert any(
        line.startswith("    BID 1     wlan     score ") and "<- chosen" in line for line in lines
    )


def test_json_round_trip() -> None:
    sim = explained_sim()
    sim.metrics(3.0, 2, rtt_ms=40, loss=0.5)
    explanation = sim.steps[-1].decision.explanation
    again = Explanation.model_validate_json(explanation.model_dump_json())
    assert again == explanation
    video = again.for_class("video")
    assert video.reason is Reason.REQUIREMENT_VIOLATED
    assert "max-loss" in video.detail
    assert (video.previous_bid, video.chosen_bid) == (2, 1)


def test_every_class_is_explained_even_when_nothing_moves() -> None:
    sim = explained_sim()
    step = sim.tick(1.0)
    assert [c.class_name for c in step.decision.explanation.classes] == ["video", "voip"]
    assert step.decision.explanation.moves() == 0
    assert all(c.reason is Reason.KEPT for c in step.decision.explanation.classes)
    assert "stays on BID 2" in render(step.decision.explanation)
