"""Pure parts of policy routing and link watching: which rules we want, which BIDs are unusable."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from services.prem.config import PremSettings
from services.prem.core.rules import RuleKey, desired_rules, plan_rules
from services.prem.core.usability import LinkInfo, unusable_bids
from services.prem.linkwatch import link_info

V6 = socket.AF_INET6
V4 = socket.AF_INET
UP = LinkInfo(admin_up=True, carrier=True)
NO_CARRIER = LinkInfo(admin_up=True, carrier=False)
ADMIN_DOWN = LinkInfo(admin_up=False, carrier=False)


def settings(bids: list[dict[str, Any]], **extra: Any) -> PremSettings:
    return PremSettings.model_validate(
        {"node": "mr1", "role": "mr", "mobile_router": "mr1", "bids": bids, **extra}
    )


@pytest.mark.parametrize(
    ("bids", "extra", "expected"),
    [
        (
            [{"bid": 1}],
            {},
            {(V6, 0x010000, 0xFF0000, 1001), (V4, 0x010000, 0xFF0000, 1001)},
        ),
        (
            [{"bid": 1}, {"bid": 7}],
            {},
            {
                (V6, 0x010000, 0xFF0000, 1001),
                (V4, 0x010000, 0xFF0000, 1001),
                (V6, 0x070000, 0xFF0000, 1007),
                (V4, 0x070000, 0xFF0000, 1007),
            },
        ),
        (
            [{"bid": 3}],
            {"mark_mask": 0xF0, "table_base": 200},
            {(V6, 0x30, 0xF0, 203), (V4, 0x30, 0xF0, 203)},
        ),
        (
            [{"bid": 255}],
            {"mark_mask": 0xFF},
            {(V6, 0xFF, 0xFF, 1255), (V4, 0xFF, 0xFF, 1255)},
        ),
    ],
    ids=["one-bid", "two-bids", "custom-mask-and-base", "low-bits"],
)
def test_desired_rules(
    bids: list[dict[str, Any]], extra: dict[str, Any], expected: set[RuleKey]
) -> None:
    assert desired_rules(settings(bids, **extra)) == expected


def test_desired_rules_cover_both_families_per_bid() -> None:
    rules = desired_rules(settings([{"bid": b} for b in (1, 2, 3)]))
    assert len(rules) == 6
    assert {family for family, *_ in rules} == {V4, V6}


A = (V6, 0x10000, 0xFF0000, 1001)
B = (V4, 0x10000, 0xFF0000, 1001)
C = (V6, 0x20000, 0xFF0000, 1002)


@pytest.mark.parametrize(
    ("desired", "actual", "remove", "add"),
    [
        ({A, B}, set(), (), (B, A)),
        ({A, B}, {A, B}, (), ()),
        ({A}, {A, C}, (C,), ()),
        (set(), {A, C}, (A, C), ()),
        ({A, C}, {B}, (B,), (A, C)),
    ],
    ids=["empty-kernel", "in-sync", "stale-bid", "remove-all", "swap"],
)
def test_plan_rules(
    desired: set[RuleKey],
    actual: set[RuleKey],
    remove: tuple[RuleKey, ...],
    add: tuple[RuleKey, ...],
) -> None:
    plan = plan_rules(desired, actual)
    assert plan.remove == remove
    assert plan.add == add
    assert bool(plan) == bool(remove or add)


def test_plan_applied_twice_is_empty() -> None:
    desired = {A, C}
    plan = plan_rules(desired, {B})
    after = ({B} - set(plan.remove)) | set(plan.add)
    assert not plan_rules(desired, after)


TWO = settings([{"bid": 1, "interface": "eth0"}, {"bid": 2, "interface": "eth1"}])
TABLES = {1001, 1002}


@pytest.mark.parametrize(
    ("links", "tables", "expected"),
    [
        ({"eth0": UP, "eth1": UP}, TABLES, frozenset()),
        ({"eth0": NO_CARRIER, "eth1": UP}, TABLES, frozenset({1})),
        ({"eth0": UP, "eth1": ADMIN_DOWN}, TABLES, frozenset({2})),
        ({"eth0": UP}, TABLES, frozenset({2})),
        ({"eth0": UP, "eth1": UP}, {1002}, frozenset({1})),
        ({"eth0": UP, "eth1": UP}, set(), frozenset({1, 2})),
        ({"eth0": UP, "eth1": UP}, {1001, 1002, 254, 1003}, frozenset()),
        ({}, set(), frozenset({1, 2})),
        ({"eth0": LinkInfo(admin_up=False, carrier=True), "eth1": UP}, TABLES, frozenset({1})),
    ],
    ids=[
        "all-good",
        "carrier-lost",
        "admin-down",
        "device-gone",
        "table-empty",
        "all-tables-empty",
        "foreign-tables-ignored",
        "nothing-known",
        "admin-down-wins-over-carrier",
    ],
)
def test_unusable_bids(
    links: dict[str, LinkInfo], tables: set[int], expected: frozenset[int]
) -> None:
    assert unusable_bids(TWO, links, tables) == expected


def test_bid_without_interface_is_judged_by_its_table_only() -> None:
    cfg = settings([{"bid": 1}, {"bid": 2, "interface": "eth1"}])
    assert unusable_bids(cfg, {}, {1001, 1002}) == frozenset({2})
    assert unusable_bids(cfg, {"eth1": UP}, {1002}) == frozenset({1})


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (0x11043, UP),  # UP|BROADCAST|RUNNING|MULTICAST|LOWER_UP
        (0x1003, NO_CARRIER),  # UP|BROADCAST|MULTICAST, no LOWER_UP
        (0x1002, ADMIN_DOWN),
    ],
    ids=["up", "no-carrier", "down"],
)
def test_link_info_from_flags(flags: int, expected: LinkInfo) -> None:
    assert link_info(flags) == expected
