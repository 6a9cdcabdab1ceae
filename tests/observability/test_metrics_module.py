"""services/metrics.py and the listen setting: refusal labels, per-service registries, exporter."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from services.contracts.messages import FallbackState, PolicyStatus, Refusal
from services.contracts.settings import ListenAddress, parse_listen
from services.metrics import MetricsListenError, start_exporter
from services.prem.metrics import REFUSAL_REASONS, PremMetrics, refusal_reason
from services.soap_gateway.metrics import GatewayMetrics
from tests.observability.scrape import scrape


class _Settings(BaseModel):
    metrics_listen: ListenAddress | None = None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:9101", ("127.0.0.1", 9101)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::1]:9101", ("::1", 9101)),
        ("localhost:80", ("localhost", 80)),
    ],
)
def test_listen_addresses_that_parse(value: str, expected: tuple[str, int]) -> None:
    assert parse_listen(value) == expected
    assert _Settings(metrics_listen=value).metrics_listen == value


@pytest.mark.parametrize("value", ["9101", ":9101", "host:", "host:port", "host:70000", "[::1]"])
def test_listen_addresses_refused_by_the_settings(value: str) -> None:
    with pytest.raises(ValidationError, match="expected HOST:PORT"):
        _Settings(metrics_listen=value)


def test_metrics_are_off_by_default() -> None:
    assert _Settings().metrics_listen is None


@pytest.mark.parametrize(
    ("refusal", "reason"),
    [
        (Refusal(reason="stale or replayed version 1", field="version"), "stale-version"),
        (Refusal(reason="message is for node 'mr1'", field="node"), "wrong-node"),
        (Refusal(reason="concerns mobile router x", field="mobile-router"), "wrong-mobile-router"),
        (Refusal(reason="uplink policies cannot", field="direction"), "wrong-direction"),
        (Refusal(reason="symmetric (scheme 2) document", field="symmetric"), "no-peer"),
        (Refusal(reason="retained policy document", field="retain"), "retained"),
        (Refusal(reason="BID 7 is not declared", policy_id="x", field="action.bid"), "unknown-bid"),
        (Refusal(reason="delete of a policy that is not installed", policy_id="x"), "conflict"),
        (Refusal(reason="insert of a policy id that is already installed"), "conflict"),
        (Refusal(reason="document carries more than 50 policies, over the limit"), "over-limit"),
        (Refusal(reason="kernel: nft add failed"), "kernel"),
        (Refusal(reason="not well-formed XML: x", line=1), "invalid-document"),
        (Refusal(reason="Element 'x': not expected", field="install.policy"), "invalid-document"),
    ],
)
def test_each_refusal_gets_a_bounded_reason(refusal: Refusal, reason: str) -> None:
    assert refusal_reason(refusal) == reason
    assert reason in REFUSAL_REASONS


def _status(result: str, **fields: object) -> PolicyStatus:
    return PolicyStatus.model_validate(
        {
            "sender": "ha1",
            "node": "ha1",
            "mobile_router": "mr1",
            "direction": "downlink",
            "result": result,
            "version": 3,
            **fields,
        }
    )


def test_prem_statuses_move_the_right_series() -> None:
    metrics = PremMetrics("ha1")
    value = metrics.registry.get_sample_value
    assert value("multinet_prem_messages_refused_total", {"reason": "stale-version"}) == 0
    metrics.record(_status("applied", elapsed_ms=4.0), rules=6, policies=3)
    refusal = Refusal(reason="stale", field="version")
    metrics.record(_status("refused", refusals=(refusal,)), rules=6, policies=3)
    fallback = FallbackState(policy_id="a", primary_bid=2, active_bid=1)
    metrics.record(_status("fallback", fallbacks=(fallback,)), rules=6, policies=3)
    assert value("multinet_prem_messages_applied_total") == 1
    assert value("multinet_prem_messages_refused_total", {"reason": "stale-version"}) == 1
    assert value("multinet_prem_apply_seconds_count") == 1
    assert value("multinet_prem_apply_seconds_bucket", {"le": "0.005"}) == 1
    assert value("multinet_prem_fallbacks_total") == 1
    assert value("multinet_prem_fallbacks_active") == 1
    assert value("multinet_prem_rules_owned") == 6
    assert value("multinet_prem_policies") == 3
    assert value("multinet_prem_enforced_version") == 3


def test_each_service_object_has_its_own_registry() -> None:
    # Two of the same kind in one process (tests do that) neither collide nor share counts.
    first, second = GatewayMetrics("gw1"), GatewayMetrics("gw2")
    first.deliveries.labels("applied").inc()
    value = second.registry.get_sample_value
    assert value("multinet_gateway_deliveries_total", {"result": "applied"}) == 0
    assert value("multinet_service_info", {"service": "soap-gateway", "node": "gw2"}) == 1


def test_the_exporter_serves_its_registry_and_releases_the_port() -> None:
    metrics = PremMetrics("ha1")
    metrics.serve("127.0.0.1:0")
    exporter = metrics.exporter
    assert exporter is not None
    assert exporter.thread.name == "metrics-prem"
    metrics.applied.inc()
    samples = scrape(exporter.port)
    assert samples["multinet_prem_messages_applied_total"] == 1
    # Nothing from the library's global registry (process or GC collectors) leaks in.
    assert samples.get("python_info") is None
    metrics.close()
    with pytest.raises(OSError):
        scrape(exporter.port, timeout_s=1)
    again = start_exporter(f"127.0.0.1:{exporter.port}", metrics.registry, "again")
    again.close()


def test_a_taken_port_is_a_clear_error() -> None:
    first = start_exporter("127.0.0.1:0", PremMetrics("a").registry, "a")
    try:
        with pytest.raises(MetricsListenError, match=f"127.0.0.1:{first.port}"):
            start_exporter(f"127.0.0.1:{first.port}", PremMetrics("b").registry, "b")
    finally:
        first.close()
