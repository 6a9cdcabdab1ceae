"""The Grafana dashboard (deploy/grafana/multinet.json) against the metrics the services
really export: every query parses as PromQL (promql-parser, the Rust parser Greptime uses),
every metric it names exists, and every exported family is on some panel, so a metric added,
renamed or removed in a service fails here instead of leaving an empty or missing panel.

No Grafana or Prometheus server runs here; the registries are the services' own classes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import promql_parser
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from services.console.metrics import ConsoleMetrics
from services.mcoa.metrics import McoaHaMetrics, McoaMrMetrics
from services.metrics import ServiceMetrics
from services.mobility_events.metrics import MobilityEventsMetrics
from services.monitor.metrics import MonitorMetrics
from services.nsa.metrics import NsaCounts, NsaMetrics
from services.prem.metrics import PremMetrics
from services.soap_gateway.metrics import GatewayMetrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "multinet.json"
_NAME = re.compile(r"\bmultinet_[a-z_]+")
#: Sample suffixes a query may add to a family's name (prometheus_client's exposition).
_SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_info", "_created")


def _counts() -> NsaCounts:
    return NsaCounts(inputs={}, decisions=0, moves=0, deliveries={}, resyncs=0, inbox=0, dropped=0)


def _services() -> list[ServiceMetrics]:
    """One metrics object of every service that serves an endpoint."""
    services: list[ServiceMetrics] = [
        MonitorMetrics("mr1"),
        MobilityEventsMetrics("ha1", ("truncated",)),
        McoaHaMetrics("ha1"),
        McoaMrMetrics("mr1"),
        NsaMetrics("nsa", _counts),
        PremMetrics("ha1"),
        GatewayMetrics("gw"),
        ConsoleMetrics("console"),
    ]
    services[0].watch_client(mqtt.Client(CallbackAPIVersion.VERSION2))
    return services


def _exported() -> set[str]:
    return {family.name for service in _services() for family in service.registry.collect()}


def _family(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _targets(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", ())
    ]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def test_every_query_is_promql(dashboard: dict[str, Any]) -> None:
    targets = _targets(dashboard)
    assert len(targets) > 20
    for title, expr in targets:
        try:
            promql_parser.parse(expr)
        except Exception as exc:  # the parser raises its own error types
            pytest.fail(f"panel {title!r}: {expr!r} is not PromQL: {exc}")


def test_every_metric_named_is_exported(dashboard: dict[str, Any]) -> None:
    exported = _exported()
    for title, expr in _targets(dashboard):
        for name in _NAME.findall(expr):
            assert name in exported or _family(name) in exported, (
                f"panel {title!r} names {name}, which no service exports"
            )


def test_every_exported_family_has_a_panel(dashboard: dict[str, Any]) -> None:
    shown = {_family(name) for _, expr in _targets(dashboard) for name in _NAME.findall(expr)}
    missing = sorted(_exported() - shown)
    assert not missing, f"metrics on no panel of deploy/grafana/multinet.json: {missing}"


def test_panels_filter_by_the_node_variable(dashboard: dict[str, Any]) -> None:
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "node"} <= variables
    for title, expr in _targets(dashboard):
        assert "$node" in expr, f"panel {title!r} ignores the node selection"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
