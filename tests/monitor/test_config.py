"""Monitor settings: bad configuration is refused with an error that names the key and why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.contracts.errors import InvalidInput
from services.contracts.settings import validate_section
from services.monitor.cli import load
from services.monitor.config import MonitorSettings, RadioSource
from services.monitor.probe import ProbeKind
from services.monitor.trace import TraceError

EXAMPLE = Path(__file__).parents[2] / "deploy" / "examples" / "monitor-mr.toml"


def _link(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"interface": "eth0", "bid": 1, "technology": "wlan"}
    return {**base, **over}


def _settings(*links: dict[str, Any], **over: Any) -> MonitorSettings:
    data = {"monitor": {"node": "mr1", "links": list(links), **over}}
    return validate_section(MonitorSettings, data, "monitor")


def test_the_shipped_example_is_valid_and_its_trace_loads() -> None:
    config = load(EXAMPLE)
    settings = config.settings
    assert [link.bid for link in settings.links] == [1, 2]
    assert settings.links[1].probe is not None
    assert settings.links[1].probe.kind is ProbeKind.UDP
    assert settings.links[1].radio is RadioSource.TRACE
    assert len(settings.load_traces()["eth1"]) > 10


def test_fast_mode_uses_the_fast_interval() -> None:
    settings = _settings(_link())
    assert settings.probe_interval_s == 1.0
    assert settings.model_copy(update={"fast": True}).probe_interval_s == 0.1


@pytest.mark.parametrize(
    ("links", "where", "why"),
    [
        ([_link(), _link(bid=2)], "monitor", "interface eth0 is listed twice"),
        ([_link(), _link(interface="eth1")], "monitor", "BID 1 is given to both eth0 and eth1"),
        ([_link(probe={"target": "2001:db8::zz"})], "monitor.links.0.probe.target", ""),
        ([_link(technology="5g")], "monitor.links.0.technology", ""),
        ([_link(interface="eth0/x")], "monitor.links.0.interface", ""),
        ([_link(interface="a-very-long-interface")], "monitor.links.0.interface", ""),
        ([_link(bid=0)], "monitor.links.0.bid", ""),
        ([_link(cost_per_mb=-1)], "monitor.links.0.cost_per_mb", ""),
        ([_link(radio="trace")], "monitor.links.0", "go together"),
        (
            [_link(probe={"target": "2001:db8::1", "source": "192.0.2.1"})],
            "monitor.links.0.probe",
            "different families",
        ),
        ([_link(probe={"target": "2001:db8::1", "kind": "tcp"})], "monitor.links.0.probe.kind", ""),
        ([], "monitor.links", ""),
    ],
)
def test_bad_links_are_refused_naming_the_key(
    links: list[dict[str, Any]], where: str, why: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        _settings(*links)
    text = "\n".join(str(problem) for problem in caught.value.problems)
    assert where in text
    assert why in text


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(InvalidInput, match="intervall"):
        _settings(_link(), intervall=2)


def test_a_bad_trace_file_names_its_line(tmp_path: Path) -> None:
    trace = tmp_path / "bad.csv"
    trace.write_text("t,signal_dbm\n0,-50\n1,-40\n0.5,-60\n")
    settings = _settings(_link(radio="trace", trace={"file": str(trace)}))
    with pytest.raises(TraceError, match=r"bad.csv:4"):
        settings.load_traces()


def test_a_missing_trace_file_is_a_trace_error(tmp_path: Path) -> None:
    settings = _settings(_link(radio="trace", trace={"file": str(tmp_path / "none.csv")}))
    with pytest.raises(TraceError, match=r"none\.csv"):
        settings.load_traces()


def test_batch_metrics_is_off_unless_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not _settings(_link()).batch_metrics
    assert not load(EXAMPLE).settings.batch_metrics  # the example shows it commented out
    assert _settings(_link(), batch_metrics=True).batch_metrics
    path = tmp_path / "m.toml"
    path.write_text(
        '[monitor]\nnode = "mr1"\nbatch_metrics = true\n'
        '[[monitor.links]]\ninterface = "eth0"\nbid = 1\ntechnology = "wlan"\n'
    )
    assert load(path).settings.batch_metrics
    monkeypatch.setenv("MULTINET_MONITOR__BATCH_METRICS", "false")
    assert not load(path).settings.batch_metrics


def test_a_batch_metrics_that_is_not_a_bool_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"monitor\.batch_metrics"):
        _settings(_link(), batch_metrics="sometimes")


def test_a_links_report_period_is_the_publish_period_or_its_slower_round() -> None:
    settings = _settings(
        _link(),
        _link(interface="wwan0", bid=2, metered=True),
        _link(interface="eth1", bid=3, protected=True),
    )
    assert [settings.report_period_for(link) for link in settings.links] == [1.0, 10.0, 1.0]
