"""Settings of the MCoA agent: strict, frozen, one section per role."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.contracts.errors import ConfigError
from services.mcoa.agent import load
from services.mcoa.config import McoaSettings
from tests.mcoa.factories import ha_settings, mcoa_settings, mr_settings


def test_table_convention_matches_the_prem() -> None:
    settings = mcoa_settings("ha")
    assert settings.table_of(2) == 1002
    assert settings.owns_table(1002)
    assert not settings.owns_table(settings.decap_table)


def test_role_needs_its_section() -> None:
    with pytest.raises(ValidationError, match="role mr needs"):
        McoaSettings.model_validate({"node": "n", "role": "mr"})
    with pytest.raises(ValidationError, match="role ha needs"):
        McoaSettings.model_validate(
            {"node": "n", "role": "ha", "mr": mr_settings().model_dump(mode="json")}
        )


def test_unknown_keys_and_duplicate_bids_are_refused() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        mr_settings(colour="blue")
    with pytest.raises(ValidationError, match="its own BID"):
        mr_settings(links=[{"interface": "m1", "bid": 1}, {"interface": "m2", "bid": 1}])
    with pytest.raises(ValidationError, match="one BID"):
        mr_settings(links=[{"interface": "m1", "bid": 1}, {"interface": "m1", "bid": 2}])


def _pipe(value: object) -> McoaSettings:
    return McoaSettings.model_validate(
        {"node": "n", "role": "mr", "pipe": value, "mr": mr_settings().model_dump(mode="json")}
    )


def test_pipe_kinds_auto_by_default_and_the_old_srv6_name_still_read() -> None:
    assert _pipe("auto").pipe == "auto"
    assert (
        McoaSettings.model_validate(
            {"node": "n", "role": "mr", "mr": mr_settings().model_dump(mode="json")}
        ).pipe
        == "auto"
    )
    assert {_pipe(kind).pipe for kind in ("ip6tnl", "seg6", "vxlan")} == {"ip6tnl", "seg6", "vxlan"}
    assert _pipe("srv6").pipe == "seg6"
    with pytest.raises(ValidationError, match="pipe"):
        _pipe("gre")


@pytest.mark.parametrize("seconds", [10, 61, 3602])
def test_lifetimes_the_wire_cannot_carry_are_refused_not_rounded(seconds: int) -> None:
    with pytest.raises(ValidationError, match=f"{seconds} s is not a multiple of 4 s"):
        mr_settings(lifetime=seconds)
    with pytest.raises(ValidationError, match="multiple of 4 s"):
        ha_settings(max_lifetime=seconds)


def test_frozen() -> None:
    settings = mcoa_settings()
    with pytest.raises(ValidationError):
        settings.node = "other"  # type: ignore[misc]


def test_load_checks_the_role(tmp_path: Path) -> None:
    path = tmp_path / "ha.toml"
    path.write_text(
        '[mcoa]\nnode = "ha1"\nrole = "ha"\n[mcoa.ha]\nha_address = "2001:db8:100::1"\n'
        'mobile_routers = [{ home_address = "2001:db8:100::2", prefixes = ["2001:db8:ff::/48"] }]\n'
    )
    assert load(path, "ha").role == "ha"
    with pytest.raises(ConfigError, match="--role mr"):
        load(path, "mr")
