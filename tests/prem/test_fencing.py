"""A worker refuses a document of an NSA replica that lost its partition (an older epoch in
the version's high bits) and names it as fenced, apart from a plain stale version; the
metric counts it under its own reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.contracts.errors import PolicyRefused
from services.contracts.fencing import EPOCH_SHIFT, next_version
from services.contracts.messages import PolicyStatus, Refusal
from services.contracts.policy import Install
from services.prem.core.policyset import DesiredState, apply_message
from services.prem.metrics import PremMetrics, refusal_reason
from tests.prem.factories import message, settings, udp_to

OLD, NEW = 7, 12


def _install(version: int) -> Install:
    return Install(policies=(udp_to(f"v{version}", 1000, 1),))


def _enforced(tmp_path: Path, version: int) -> DesiredState:
    msg = message(version, _install(version))
    return apply_message(DesiredState(node="ha1"), msg, settings(tmp_path)).state


def test_a_newer_epoch_takes_over_above_everything_the_old_one_sent(tmp_path: Path) -> None:
    old_last = (OLD << EPOCH_SHIFT) + 500
    state = _enforced(tmp_path, old_last)
    first = next_version(old_last, NEW)
    out = apply_message(state, message(first, _install(first)), settings(tmp_path))
    assert out.state.version == (NEW << EPOCH_SHIFT) + 1


def test_the_old_epoch_is_refused_as_fenced_and_changes_nothing(tmp_path: Path) -> None:
    state = _enforced(tmp_path, (NEW << EPOCH_SHIFT) + 1)
    # The old holder, resumed, has seen the new epoch's version and still sends under its own.
    stale = next_version(state.version, OLD)
    assert stale >> EPOCH_SHIFT == OLD
    before = state.model_dump()
    with pytest.raises(PolicyRefused) as info:
        apply_message(state, message(stale, _install(stale)), settings(tmp_path))
    (problem,) = info.value.problems
    assert problem.field == "version.epoch"
    assert f"epoch {OLD}, below epoch {NEW}" in problem.reason
    assert state.model_dump() == before


def test_a_replay_within_one_epoch_stays_a_stale_version(tmp_path: Path) -> None:
    state = _enforced(tmp_path, (NEW << EPOCH_SHIFT) + 3)
    with pytest.raises(PolicyRefused) as info:
        apply_message(state, message(state.version, _install(1)), settings(tmp_path))
    assert [p.field for p in info.value.problems] == ["version"]


def test_fenced_refusals_are_counted_apart() -> None:
    refusal = Refusal(reason="fenced: version 1 is of epoch 1", field="version.epoch")
    assert refusal_reason(refusal) == "fenced-epoch"
    metrics = PremMetrics("ha1")
    status = PolicyStatus(
        sender="ha1",
        node="ha1",
        mobile_router="mr1",
        direction="downlink",
        result="refused",
        version=5,
        requested_version=4,
        refusals=(refusal,),
    )
    metrics.record(status, rules=0, policies=0)
    value = metrics.registry.get_sample_value(
        "multinet_prem_messages_refused_total", {"reason": "fenced-epoch"}
    )
    assert value == 1
