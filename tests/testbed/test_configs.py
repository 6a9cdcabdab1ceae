"""Every generated settings file is what its service accepts (the services' own models)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.contracts.settings import BrokerSettings, read_file, validate_section
from services.mcoa.config import McoaSettings
from services.mobility_events.config import MobilityEventsSettings
from services.monitor.config import MonitorSettings
from services.prem.config import PremSettings
from services.soap_gateway.config import GatewaySettings
from services.testbed import configs, scenario
from services.testbed.scenario import trace_path


@pytest.fixture
def run(tmp_path: Path) -> configs.RunSettings:
    return configs.RunSettings(run_dir=tmp_path, topic_root="t-1/multinet/v1", soap_port=18080)


def _roundtrip(path: Path, content: dict[str, object]) -> dict[str, object]:
    configs.write(path, content)
    return read_file(path)


def test_each_service_accepts_its_file(run: configs.RunSettings, tmp_path: Path) -> None:
    figure, where = scenario.load("radio")
    traces: dict[str, Path] = {
        link: trace_path(where, name) for link, name in figure.traces.items()
    }
    cases: list[tuple[str, Any, dict[str, Any]]] = [
        ("prem", PremSettings, configs.prem(run, "ha")),
        ("prem", PremSettings, configs.prem(run, "mr")),
        ("mcoa", McoaSettings, configs.mcoa(run, "ha")),
        ("mcoa", McoaSettings, configs.mcoa(run, "mr")),
        ("mobility_events", MobilityEventsSettings, configs.mobility_events(run)),
        ("monitor", MonitorSettings, configs.monitor(run, traces)),
        ("soap_gateway", GatewaySettings, configs.soap_gateway(run)),
    ]
    for index, (section, model, content) in enumerate(cases):
        data = _roundtrip(tmp_path / f"{index}.yaml", content)
        validate_section(model, data, section)
        broker = validate_section(BrokerSettings, data, "broker")
        assert broker.topic_root == run.topic_root
    monitor = validate_section(MonitorSettings, configs.monitor(run, traces), "monitor")
    assert monitor.load_traces().keys() == {"eth0", "eth1"}


@pytest.mark.parametrize("name", ["figure7", "radio"])
def test_the_nsa_file_fits_the_nsa_service(run: configs.RunSettings, name: str) -> None:
    settings = pytest.importorskip("services.nsa.core.settings")
    loaded, _ = scenario.load(name)
    content = configs.nsa_settings(run, loaded.nsa)
    table = settings.NsaServiceSettings.model_validate(content["nsa"])
    assert table.gateway.url == run.gateway_url
    assert table.base_config(table.profiles, table.preferences, table.rules) == loaded.nsa


def test_the_published_documents_are_the_nsas() -> None:
    documents = pytest.importorskip("services.nsa.core.documents")
    from services.testbed.actions import preferences_payload, rules_payload

    loaded, _ = scenario.load("figure7")
    rules = documents.RulesDocument.model_validate_json(rules_payload(loaded.nsa.rules))
    assert rules.rules == loaded.nsa.rules
    prefs = documents.PreferencesDocument.model_validate_json(preferences_payload(()))
    assert prefs.mobile_router == "mr1"


def test_the_console_file_fits_the_console(run: configs.RunSettings, tmp_path: Path) -> None:
    from dataclasses import replace

    from services.console.config import ConsoleSettings, Role
    from services.soap_gateway.passwords import PasswordHash, hash_password

    with pytest.raises(ValueError, match="no console"):
        configs.console(run, "x")
    digest = hash_password("once", iterations=1000)
    content = configs.console(replace(run, console_listen="127.0.0.1:18081"), digest)
    data = _roundtrip(tmp_path / "console.yaml", content)
    table = validate_section(ConsoleSettings, data, "console")
    assert table.listen == "127.0.0.1:18081"
    user = table.users[configs.CONSOLE_USER]
    assert user.role is Role.OPERATOR
    assert PasswordHash.parse(user.password_hash).matches(b"once")
    assert validate_section(BrokerSettings, data, "broker").topic_root == run.topic_root
