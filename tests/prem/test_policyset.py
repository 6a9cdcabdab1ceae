"""A policy message changes the desired set whole, or is refused and changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.contracts.errors import PolicyRefused
from services.contracts.policy import Flush, Install, Update
from services.prem.core.policyset import DesiredState, apply_message, is_redelivery
from tests.prem.factories import message, settings, udp_to


def _installed(tmp_path: Path) -> DesiredState:
    msg = message(1, Install(policies=(udp_to("a", 1000, 1), udp_to("b", 2000, 2))))
    return apply_message(DesiredState(node="ha1"), msg, settings(tmp_path)).state


def test_install_replaces_the_whole_set(tmp_path: Path) -> None:
    state = _installed(tmp_path)
    out = apply_message(
        state, message(2, Install(policies=(udp_to("c", 3000, 3),))), settings(tmp_path)
    )
    assert [p.id for p in out.state.policies] == ["c"]
    assert out.state.version == 2
    assert out.deleted == 2


def test_update_deletes_replaces_and_inserts(tmp_path: Path) -> None:
    state = _installed(tmp_path)
    op = Update(insert=(udp_to("c", 3000, 3),), delete=("a",), replace=(udp_to("b", 2001, 1),))
    out = apply_message(state, message(2, op), settings(tmp_path))
    by_id = out.state.by_id()
    assert sorted(by_id) == ["b", "c"]
    assert by_id["b"].selector.dst_port is not None
    assert by_id["b"].selector.dst_port.first == 2001
    assert (out.inserted, out.deleted, out.replaced) == (1, 1, 1)


def test_flush_removes_everything(tmp_path: Path) -> None:
    out = apply_message(_installed(tmp_path), message(2, Flush()), settings(tmp_path))
    assert out.state.policies == ()
    assert out.deleted == 2


@pytest.mark.parametrize(
    ("msg_version", "op", "expected"),
    [
        (1, Flush(), "stale or replayed version 1"),
        (2, Update(delete=("zz",)), "delete of a policy that is not installed"),
        (2, Update(replace=(udp_to("zz", 1, 1),)), "replace of a policy that is not installed"),
        (2, Update(insert=(udp_to("a", 1, 1),)), "already installed"),
        (2, Install(policies=(udp_to("x", 1, 9),)), "BID 9 is not declared"),
        (2, Install(policies=(udp_to("x", 1, 1, fallbacks=(7,)),)), "BID 7 is not declared"),
    ],
)
def test_refusals_name_the_problem_and_change_nothing(
    tmp_path: Path, msg_version: int, op: Install | Update | Flush, expected: str
) -> None:
    state = _installed(tmp_path)
    before = state.model_dump()
    with pytest.raises(PolicyRefused) as info:
        apply_message(state, message(msg_version, op), settings(tmp_path))
    assert expected in str(info.value)
    assert state.model_dump() == before


def test_refusal_names_the_policy_and_field(tmp_path: Path) -> None:
    with pytest.raises(PolicyRefused) as info:
        apply_message(
            _installed(tmp_path),
            message(2, Install(policies=(udp_to("x", 1, 9),))),
            settings(tmp_path),
        )
    (problem,) = info.value.problems
    assert (problem.policy_id, problem.field) == ("x", "action.bid")


def test_message_for_another_node_or_direction_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyRefused) as info:
        apply_message(
            DesiredState(node="ha1"),
            message(1, Flush(), node="ha2", direction="uplink"),
            settings(tmp_path),
        )
    fields = {p.field for p in info.value.problems}
    assert fields == {"node", "direction"}


def test_policy_count_limit(tmp_path: Path) -> None:
    small = settings(tmp_path, limits={"max_policies": 2})
    msg = message(1, Install(policies=tuple(udp_to(f"p{i}", i + 1, 1) for i in range(3))))
    with pytest.raises(PolicyRefused, match="over the limit of 2"):
        apply_message(DesiredState(node="ha1"), msg, small)


def test_redelivery_is_recognised_only_for_the_same_document(tmp_path: Path) -> None:
    msg = message(1, Flush())
    state = apply_message(DesiredState(node="ha1"), msg, settings(tmp_path), "d1").state
    assert is_redelivery(state, msg, "d1")
    assert not is_redelivery(state, msg, "other")
    assert not is_redelivery(state, message(2, Flush()), "d1")


def test_install_counts_only_what_changes(tmp_path: Path) -> None:
    state = _installed(tmp_path)  # a -> port 1000, b -> port 2000
    same_again = Install(policies=(udp_to("a", 1000, 1), udp_to("b", 2000, 2)))
    out = apply_message(state, message(2, same_again), settings(tmp_path))
    assert (out.inserted, out.deleted, out.replaced) == (0, 0, 0)
    changed = Install(policies=(udp_to("a", 1000, 3), udp_to("c", 3000, 2)))
    out = apply_message(state, message(2, changed), settings(tmp_path))
    assert (out.inserted, out.deleted, out.replaced) == (1, 1, 1)


def test_a_policy_tied_with_an_earlier_id_on_priority_and_selector_is_reported(
    tmp_path: Path,
) -> None:
    tied = (udp_to("b", 5001, 1, priority=7), udp_to("a", 5001, 2, priority=7))
    apart = (udp_to("c", 5001, 1, priority=8), udp_to("d", 5002, 1, priority=7))
    out = apply_message(
        DesiredState(node="ha1"), message(1, Install(policies=tied + apart)), settings(tmp_path)
    )
    # 'a' sorts first and takes every packet; 'c' only loses on priority, 'd' selects others.
    assert [(w.policy_id, w.field) for w in out.warnings] == [("b", "selector")]
    assert "'a'" in out.warnings[0].reason
    assert [p.id for p in out.state.policies] == ["a", "b", "d", "c"]


def test_many_shadowed_policies_are_summarised(tmp_path: Path) -> None:
    copies = tuple(udp_to(f"p{n:02}", 5001, 1) for n in range(30))
    out = apply_message(
        DesiredState(node="ha1"), message(1, Install(policies=copies)), settings(tmp_path)
    )
    assert len(out.warnings) == 21
    assert out.warnings[-1].reason == "9 more shadowed policies not shown"
