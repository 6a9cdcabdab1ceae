"""The decision thread's counters, which the metrics endpoint exports: moves, each node
document by the answer it got, and resyncs (a node's state in doubt, so a full Install next).
"""

from __future__ import annotations

from services.contracts.messages import BindingEventKind
from tests.nsa.enginebed import make_bed
from tests.nsa.factories import HA_NODE, MR_NODE

GOOD = {"rtt_ms": 20.0}
SLOW = {"rtt_ms": 200.0}


def test_moves_answers_and_resyncs_are_counted() -> None:
    bed = make_bed()
    stats = bed.engine.stats
    bed.start({1: GOOD, 2: SLOW})
    assert bed.bid() == 1
    assert stats.moves == 0, "the first decision places the class: no move"
    assert stats.deliveries == {"applied": 2}, "one Install for the HA, one for the MR"
    assert stats.resyncs == 0, "a fresh ledger installs the whole set, but is not in doubt"

    bed.metrics(1, rtt_ms=400.0)
    bed.metrics(2, rtt_ms=30.0)
    bed.at(bed.now + bed.settings.decision.dwell_s + 0.1)
    assert bed.bid() == 2
    assert stats.moves == 1
    assert stats.deliveries == {"applied": 4}

    bed.gateway.down = {HA_NODE}  # the HA's worker does not answer: its state is in doubt
    bed.metrics(1, rtt_ms=10.0)
    bed.metrics(2, rtt_ms=300.0)
    bed.at(bed.now + bed.settings.decision.dwell_s + 0.1)
    assert stats.moves == 2
    assert stats.deliveries == {"applied": 5, "not-reached": 1}
    assert stats.resyncs == 1
    bed.gateway.down = set()
    bed.at(bed.now + 1.1)  # the back-off: a full Install for both nodes
    assert bed.kinds()[-1] == "install"
    assert stats.deliveries == {"applied": 7, "not-reached": 1}
    assert stats.resyncs == 1
    assert bed.enforced() == (1, 1)

    bed.hello(MR_NODE, 77)  # a worker that lost its state: a full Install again
    assert stats.resyncs == 2
    assert bed.kinds()[-1] == "install"
    assert stats.deliveries == {"applied": 9, "not-reached": 1}


def test_a_refused_document_counts_as_refused_and_resynchronises_its_node() -> None:
    bed = make_bed()
    stats = bed.engine.stats
    bed.gateway.ha.state = bed.gateway.ha.state.model_copy(update={"version": 50})
    bed.start({1: GOOD, 2: SLOW})
    assert stats.deliveries == {"applied": 1, "refused": 1}
    assert stats.resyncs == 1
    bed.at(bed.now + 1.1)
    assert stats.deliveries == {"applied": 3, "refused": 1}
    assert stats.resyncs == 1


def test_a_binding_that_goes_away_moves_the_class_at_once() -> None:
    bed = make_bed()
    bed.start({1: GOOD, 2: SLOW})
    bed.binding(1, BindingEventKind.DEREGISTERED)
    assert bed.bid() == 2
    assert bed.engine.stats.moves == 1
