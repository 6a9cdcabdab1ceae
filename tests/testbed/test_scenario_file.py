"""Scenario files: the shipped ones validate, and every error names its step and field."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from services.contracts.errors import ConfigError
from services.testbed import scenario
from services.testbed.scenario import Decider, InstallPolicies

HTTP = {
    "id": "http",
    "priority": 10,
    "selector": {"next_header": 6, "dst_port": {"first": 8080, "last": 8080}},
    "action": {"kind": "forward", "bid": 2, "fallbacks": [1]},
}
BASE: dict[str, Any] = {
    "name": "small",
    "steps": [
        {"at": 0, "label": "t0", "wait": [{"until": "flows", "interface": "eth0"}]},
        {"at": 5, "label": "t1", "do": {"action": "install-policies", "policies": [HTTP]}},
        {"label": "t2", "wait": [{"until": "enforced", "nodes": ["ha"]}]},
    ],
}


def _problems(data: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        scenario.validate(data, source="test.yaml")
    return [str(p) for p in info.value.problems]


def _with(path: list[str | int], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    target: Any = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


@pytest.mark.parametrize("name", ["figure7", "radio"])
def test_shipped_scenarios_validate(name: str) -> None:
    loaded, path = scenario.load(name)
    assert loaded.name == name
    assert path.parent == scenario.SCENARIO_DIR


def test_figure7_has_the_papers_labels_for_both_deciders() -> None:
    loaded, _ = scenario.load("figure7")
    for decider in Decider:
        labels = {s.label for s in loaded.steps_for(decider) if s.label}
        assert {"t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7"} <= labels, decider
    soap = loaded.steps_for(Decider.SOAP)
    assert any(isinstance(s.do, InstallPolicies) for s in soap)
    assert not any(isinstance(s.do, InstallPolicies) for s in loaded.steps_for(Decider.NSA))


def test_a_valid_small_scenario() -> None:
    loaded = scenario.validate(BASE)
    assert [s.title() for s in loaded.steps] == ["t0: wait", "t1: install-policies", "t2: wait"]


def test_a_bad_port_names_the_step_its_label_and_the_field() -> None:
    data = _with(["steps", 1, "do", "policies", 0, "selector", "dst_port", "first"], 70000)
    problems = _problems(data)
    assert any(
        "steps[1] (t1): do.policies[0].selector.dst_port.first" in p and "65535" in p
        for p in problems
    ), problems


def test_an_unknown_action_is_named() -> None:
    problems = _problems(_with(["steps", 1, "do"], {"action": "teleport"}))
    assert any("steps[1] (t1): do" in p and "teleport" in p for p in problems), problems


def test_an_unknown_key_in_a_condition_is_named() -> None:
    wait = [{"until": "enforced", "nodes": ["ha"], "node": "mr"}]
    problems = _problems(_with(["steps", 2, "wait"], wait))
    assert any("steps[2] (t2): wait[0].node" in p and "Extra inputs" in p for p in problems), (
        problems
    )


def test_a_wrong_node_name_is_named() -> None:
    problems = _problems(_with(["steps", 2, "wait"], [{"until": "enforced", "nodes": ["cn"]}]))
    assert any("steps[2] (t2): wait[0].nodes[0]" in p for p in problems), problems


def test_a_step_without_anything_to_do_is_refused() -> None:
    problems = _problems(_with(["steps", 2], {"label": "t2"}))
    assert any("steps[2] (t2)" in p and "at least one of at, do, wait" in p for p in problems)


def test_time_going_backwards_names_the_step() -> None:
    problems = _problems(_with(["steps", 1, "at"], -1))
    assert any("steps[1] (t1): at" in p for p in problems), problems
    data = _with(["steps", 2, "at"], 2)
    problems = _problems(data)
    assert any("steps[2] at 2 s comes before" in p for p in problems), problems


def test_soap_policies_are_not_an_nsa_step() -> None:
    data = _with(["steps", 1, "only"], "nsa")
    problems = _problems(data)
    assert any("steps[1] (t1)" in p and "soap decider's way" in p for p in problems), problems


def test_an_nsa_config_error_is_named() -> None:
    data = copy.deepcopy(BASE)
    data["nsa"] = {"profiles": [{"name": "http", "selectors": [], "steering": "best"}]}
    problems = _problems(data)
    assert any("nsa.profiles[0].selectors" in p for p in problems), problems


def test_unknown_scenario_names_the_shipped_ones() -> None:
    with pytest.raises(ConfigError) as info:
        scenario.load("no-such-scenario")
    assert "figure7" in str(info.value)


def test_a_file_that_does_not_parse(tmp_path: Any) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("steps: [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="does not parse"):
        scenario.load(str(path))


def test_a_file_round_trips(tmp_path: Any) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(BASE), encoding="utf-8")
    loaded, where = scenario.load(str(path))
    assert where == path
    assert loaded == scenario.validate(BASE)
