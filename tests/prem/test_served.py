"""The served routers file of an HA worker for many routers, and the settings around it."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.contracts.errors import ConfigError
from services.prem.core.fleetscope import ServedRouter
from services.prem.served import load_served
from tests.prem.factories import settings


def test_routers_are_read_in_order_with_comments_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "served"
    path.write_text(
        "# node mobile-router prefix\n\n"
        "ha1-mr1\tmr1  2001:db8:1::/48  # bus 1\n"
        "ha1-mr2 mr2 2001:db8:2::/48\n",
        encoding="utf-8",
    )
    assert load_served(path) == (
        ServedRouter("ha1-mr1", "mr1", ipaddress.IPv6Network("2001:db8:1::/48")),
        ServedRouter("ha1-mr2", "mr2", ipaddress.IPv6Network("2001:db8:2::/48")),
    )


def test_every_bad_line_is_named_at_once(tmp_path: Path) -> None:
    path = tmp_path / "served"
    path.write_text(
        "ha1-mr1 mr1\n"  # a field missing
        f"{'n' * 41} mr2 2001:db8:2::/48\n"  # a node too long for the table's ids
        "ha1-mr3 mr:3 2001:db8:3::/48\n"  # not a node id
        "ha1-mr4 mr4 2001:db8:4::1/48\n"  # host bits set
        "ha1-mr5 mr5 2001:db8:5::/48\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as refused:
        load_served(path)
    assert [p.line for p in refused.value.problems] == [1, 2, 3, 4]


def test_an_empty_or_missing_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("# nobody yet\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="names no router"):
        load_served(empty)
    with pytest.raises(ConfigError, match="served routers file"):
        load_served(tmp_path / "absent")


def test_only_an_ha_serves_many_routers(tmp_path: Path) -> None:
    assert settings(tmp_path, serves=str(tmp_path / "served")).serves == tmp_path / "served"
    with pytest.raises(ValidationError, match="HA's worker only"):
        settings(tmp_path, role="mr", serves=str(tmp_path / "served"))
