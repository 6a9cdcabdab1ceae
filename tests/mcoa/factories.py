"""Settings and messages for the pure tests of the MCoA agent."""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network
from typing import Any

from services.mcoa.config import HaSettings, LinkSettings, McoaSettings, MrSettings
from services.mcoa.registration import build_bu
from services.mobility_header.codec import BindingUpdate

HA = IPv6Address("2001:db8:100::1")
HOME = IPv6Address("2001:db8:100::2")
COA1 = IPv6Address("2001:db8:1::2")
COA2 = IPv6Address("2001:db8:2::2")
MNP = IPv6Network("2001:db8:ff::/64")


def mr_settings(**overrides: Any) -> MrSettings:
    data: dict[str, Any] = {
        "mr_id": "mr1",
        "home_address": str(HOME),
        "ha_address": str(HA),
        "prefixes": [str(MNP)],
        "links": [
            {"interface": "m1", "bid": 1, "priority": 10},
            {"interface": "m2", "bid": 2, "priority": 5},
        ],
        "lifetime": 60,
    }
    data.update(overrides)
    return MrSettings.model_validate(data)


def ha_settings(**overrides: Any) -> HaSettings:
    data: dict[str, Any] = {
        "ha_address": str(HA),
        "mobile_routers": [{"home_address": str(HOME), "prefixes": ["2001:db8:ff::/48"]}],
        "max_lifetime": 3600,
    }
    data.update(overrides)
    return HaSettings.model_validate(data)


def mcoa_settings(role: str = "mr") -> McoaSettings:
    section = {"mr": mr_settings()} if role == "mr" else {"ha": ha_settings()}
    return McoaSettings.model_validate({"node": "n1", "role": role, **section})


def link(bid: int = 1) -> LinkSettings:
    return mr_settings().links[bid - 1]


def bu(
    sequence: int = 1, *, bid: int = 1, coa: IPv6Address = COA1, lifetime: int = 60
) -> BindingUpdate:
    return build_bu(mr_settings(), link(bid), coa, sequence, lifetime)
