"""Settings of the mobility-events service: what is refused, and the identity they describe."""

from __future__ import annotations

from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from services.cli import main
from services.contracts.settings import load_service_file
from services.mobility_events.config import MobilityEventsSettings
from services.mobility_header import BindingUpdate, MobileNetworkPrefix

GOOD: dict[str, Any] = {
    "node": "ha1",
    "mobile_routers": [
        {"id": "mr1", "prefixes": ["2001:db8:a::/48"], "care_of_addresses": ["2001:db8:1::1"]},
        {"id": "mr2", "prefixes": ["2001:db8:b::/48"]},
    ],
}


def settings(**changes: Any) -> MobilityEventsSettings:
    return MobilityEventsSettings.model_validate({**GOOD, **changes})


def test_defaults() -> None:
    s = settings()
    assert (s.handover_started_on_new_coa, s.tick_interval_s, s.default_bid) == (True, 0.5, 1)
    assert s.capture_outgoing


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mobile_routers": []}, "at least 1"),
        ({"tick_interval_s": 0}, "greater than 0"),
        ({"surprise": 1}, "Extra inputs"),
        ({"default_bid": 0}, "greater than or equal to 1"),
        ({"node": "has space"}, "pattern"),
        (
            {"mobile_routers": [GOOD["mobile_routers"][0], GOOD["mobile_routers"][0]]},
            "declared twice",
        ),
        (
            {
                "mobile_routers": [
                    *GOOD["mobile_routers"],
                    {"id": "mr3", "prefixes": ["2001:db8::/32"]},
                ]
            },
            "overlaps",
        ),
        (
            {
                "mobile_routers": [
                    *GOOD["mobile_routers"],
                    {
                        "id": "mr3",
                        "prefixes": ["2001:db8:c::/48"],
                        "care_of_addresses": ["2001:db8:1::1"],
                    },
                ]
            },
            "declared for mr1 and mr3",
        ),
        ({"mobile_routers": [{"id": "mr1", "prefixes": ["10.0.0.0/8"]}]}, "IPv6"),
    ],
)
def test_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        settings(**changes)


def test_settings_are_frozen() -> None:
    with pytest.raises(ValidationError):
        settings().node = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("prefix", "source", "expected"),
    [
        ("2001:db8:a:1::", "2001:db8:9::9", "mr1"),
        ("2001:db8:b::", "2001:db8:9::9", "mr2"),
        (None, "2001:db8:1::1", "mr1"),  # no MNP option: the fixed care-of address
        ("2001:db8:f::", "2001:db8:9::9", None),
        (None, "2001:db8:9::9", None),
    ],
)
def test_identity(prefix: str | None, source: str, expected: str | None) -> None:
    options = () if prefix is None else (MobileNetworkPrefix(IPv6Address(prefix), 64),)
    update = BindingUpdate(sequence=1, lifetime=1, options=options)
    assert settings().identity()(IPv6Address(source), update) == expected


def test_file_sections_and_check_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.toml"
    good.write_text(
        '[mobility_events]\nnode = "ha1"\n'
        'mobile_routers = [{ id = "mr1", prefixes = ["2001:db8:a::/48"] }]\n'
        '[broker]\ntopic_root = "t/v1"\n[prem]\nignored = true\n',
        encoding="utf-8",
    )
    assert main(["mobility-events", "--config", str(good), "--check"]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text('[mobility_events]\nnode = "ha1"\nmobile_routers = []\n', encoding="utf-8")
    assert main(["mobility-events", "--config", str(bad), "--check"]) == 2
    assert "mobility_events.mobile_routers" in capsys.readouterr().err
    both = tmp_path / "both.toml"
    both.write_text(
        '[prem]\nignored = true\n[mobility_events]\nnode = "ha1"\n'
        'mobile_routers = [{ id = "mr1", prefixes = ["2001:db8:ff::/64"] }]\n'
    )
    parsed = load_service_file(both, "mobility_events", MobilityEventsSettings)
    assert parsed.broker.topic_root == "multinet/v1"
