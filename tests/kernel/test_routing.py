"""Policy routing rules in a real kernel, checked through an independent reader (`ip rule`)."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from typing import Any

import pytest

from services import netns
from services.contracts.errors import KernelError
from services.prem.config import PremSettings
from services.prem.core.rules import desired_rules
from services.prem.routing import ensure_rules, owned_rules, remove_rules

pytestmark = pytest.mark.kernel

PRIORITY = 20000
_RULE = re.compile(r"^(\d+):\s+from all fwmark (0x[0-9a-f]+)/(0x[0-9a-f]+) lookup (\d+)\s*$")


def settings(*bids: int) -> PremSettings:
    return PremSettings.model_validate(
        {
            "node": "mr1",
            "role": "mr",
            "mobile_router": "mr1",
            "bids": [{"bid": b} for b in bids],
            "rule_priority": PRIORITY,
        }
    )


def ip_rules(ns: str, family: str) -> list[str]:
    """Raw `ip -6|-4 rule show` lines, the reader that did not make the change."""
    return netns.run(ns, ["ip", family, "rule", "show"]).splitlines()


def fwmark_rules(ns: str, family: str, priority: int = PRIORITY) -> set[tuple[int, int, int]]:
    """(mark, mask, table) of the fwmark rules `ip` shows at `priority`."""
    found = set()
    for line in ip_rules(ns, family):
        match = _RULE.match(line.strip())
        if match and int(match[1]) == priority:
            found.add((int(match[2], 16), int(match[3], 16), int(match[4])))
    return found


def lines_at(ns: str, family: str, priority: int) -> list[str]:
    return [line for line in ip_rules(ns, family) if line.startswith(f"{priority}:")]


def expected(*bids: int) -> set[tuple[int, int, int]]:
    return {(b << 16, 0xFF0000, 1000 + b) for b in bids}


@pytest.fixture
def ns(make_netns: Callable[[str], str]) -> str:
    return make_netns("rt")


def test_ensure_installs_one_rule_per_bid_in_both_families(ns: str) -> None:
    cfg = settings(1, 2)
    netns.call_in(ns, ensure_rules, cfg)
    assert fwmark_rules(ns, "-6") == expected(1, 2)
    assert fwmark_rules(ns, "-4") == expected(1, 2)
    assert netns.call_in(ns, owned_rules, cfg) == desired_rules(cfg)


def test_second_ensure_changes_nothing(ns: str) -> None:
    cfg = settings(1, 2, 3)
    netns.call_in(ns, ensure_rules, cfg)
    before = (ip_rules(ns, "-6"), ip_rules(ns, "-4"))
    netns.call_in(ns, ensure_rules, cfg)
    assert (ip_rules(ns, "-6"), ip_rules(ns, "-4")) == before
    assert len(lines_at(ns, "-6", PRIORITY)) == 3
    assert len(lines_at(ns, "-4", PRIORITY)) == 3


def test_foreign_rules_at_other_priorities_survive(ns: str) -> None:
    netns.run(ns, ["ip", "-6", "rule", "add", "pref", "19999", "fwmark", "0x10000/0xff0000",
                   "lookup", "1001"])  # fmt: skip
    netns.run(ns, ["ip", "-4", "rule", "add", "pref", "30000", "lookup", "7"])
    cfg = settings(2)
    netns.call_in(ns, ensure_rules, cfg)
    netns.call_in(ns, remove_rules, cfg)
    assert fwmark_rules(ns, "-6", 19999) == expected(1)
    assert lines_at(ns, "-4", 30000) == ["30000:\tfrom all lookup 7"]
    assert lines_at(ns, "-6", PRIORITY) == []
    assert lines_at(ns, "-4", PRIORITY) == []


def test_stale_rules_at_our_priority_are_removed(ns: str) -> None:
    netns.run(ns, ["ip", "-6", "rule", "add", "pref", str(PRIORITY), "fwmark",
                   "0x90000/0xff0000", "lookup", "1009"])  # fmt: skip
    netns.run(ns, ["ip", "-4", "rule", "add", "pref", str(PRIORITY), "lookup", "55"])
    netns.run(ns, ["ip", "-6", "rule", "add", "pref", str(PRIORITY), "from", "2001:db8::/32",
                   "lookup", "1001"])  # fmt: skip
    cfg = settings(1)
    netns.call_in(ns, ensure_rules, cfg)
    assert lines_at(ns, "-6", PRIORITY) == ["20000:\tfrom all fwmark 0x10000/0xff0000 lookup 1001"]
    assert lines_at(ns, "-4", PRIORITY) == ["20000:\tfrom all fwmark 0x10000/0xff0000 lookup 1001"]


def test_bid_removed_from_config_loses_its_rules(ns: str) -> None:
    netns.call_in(ns, ensure_rules, settings(1, 2, 3))
    netns.call_in(ns, ensure_rules, settings(1, 3))
    assert fwmark_rules(ns, "-6") == expected(1, 3)
    assert fwmark_rules(ns, "-4") == expected(1, 3)


def test_remove_rules_empties_our_priority(ns: str) -> None:
    cfg = settings(1, 2)
    netns.call_in(ns, ensure_rules, cfg)
    netns.call_in(ns, remove_rules, cfg)
    assert netns.call_in(ns, owned_rules, cfg) == set()
    assert lines_at(ns, "-6", PRIORITY) == []
    assert lines_at(ns, "-4", PRIORITY) == []
    netns.call_in(ns, remove_rules, cfg)  # nothing left to remove is not an error


def _with_shared_socket(cfg: PremSettings) -> set[Any]:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        ensure_rules(cfg, ipr)
        ensure_rules(cfg, ipr)
        return owned_rules(cfg, ipr)


def test_caller_supplied_socket(ns: str) -> None:
    cfg = settings(4)
    assert netns.call_in(ns, _with_shared_socket, cfg) == {
        (socket.AF_INET6, 0x40000, 0xFF0000, 1004),
        (socket.AF_INET, 0x40000, 0xFF0000, 1004),
    }


def _ensure_with_lost_adds(cfg: PremSettings) -> str:
    """Adds that silently do nothing must not pass the read-back."""
    from services.prem import routing

    routing._change = lambda *_args: None  # the child process is discarded afterwards
    try:
        ensure_rules(cfg)
    except KernelError as exc:
        return str(exc)
    return "no error"


def test_read_back_mismatch_raises(ns: str) -> None:
    message = netns.call_in(ns, _ensure_with_lost_adds, settings(1))
    assert message.startswith("ensure rules failed")
    assert "missing" in message
