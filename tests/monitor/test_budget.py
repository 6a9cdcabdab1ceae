"""Data budgets: billing periods, counting from the interface counters, the state file."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from services.monitor.budget import (
    BudgetFile,
    BudgetMeter,
    BudgetPeriod,
    human_bytes,
    load_state,
    save_state,
)
from services.monitor.config import MonitorSettings
from services.monitor.counters import Counters


def _t(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()


def _c(rx: int, tx: int) -> Counters:
    return Counters(rx_bytes=rx, tx_bytes=tx, rx_packets=0, tx_packets=0, at=0.0)


def test_a_monthly_period_starts_on_its_day() -> None:
    period = BudgetPeriod(kind="monthly", start_day=15)
    assert period.bounds(_t(2026, 3, 20, 12)) == (_t(2026, 3, 15), _t(2026, 4, 15))
    assert period.bounds(_t(2026, 3, 14, 23, 59)) == (_t(2026, 2, 15), _t(2026, 3, 15))
    assert period.bounds(_t(2026, 1, 3)) == (_t(2025, 12, 15), _t(2026, 1, 15))
    assert period.bounds(_t(2026, 12, 15)) == (_t(2026, 12, 15), _t(2027, 1, 15))


def test_a_period_of_days_counts_from_its_start() -> None:
    period = BudgetPeriod(kind="days", days=7, start=date(2026, 1, 1))
    assert period.bounds(_t(2026, 1, 9)) == (_t(2026, 1, 8), _t(2026, 1, 15))
    assert period.bounds(_t(2026, 1, 8)) == (_t(2026, 1, 8), _t(2026, 1, 15))


def test_the_meter_counts_both_directions_from_the_first_reading() -> None:
    meter = BudgetMeter(10_000, BudgetPeriod(), None, _t(2026, 3, 2))
    meter.count(_c(1_000, 500), _t(2026, 3, 2))  # a baseline, not traffic of this period
    assert meter.used_bytes == 0
    meter.count(_c(3_000, 1_500), _t(2026, 3, 2, 1))
    assert meter.used_bytes == 3_000
    assert meter.share == pytest.approx(0.3)
    assert meter.period_end == _t(2026, 4, 1)


def test_counters_that_start_again_from_zero_count_what_they_show() -> None:
    meter = BudgetMeter(10_000, BudgetPeriod(), None, _t(2026, 3, 2))
    meter.count(_c(5_000, 5_000), _t(2026, 3, 2))
    meter.count(_c(100, 50), _t(2026, 3, 2, 1))  # the device was re-created
    assert meter.used_bytes == 150


def test_the_period_rolls_over_and_starts_from_zero() -> None:
    meter = BudgetMeter(10_000, BudgetPeriod(), None, _t(2026, 3, 31, 23))
    meter.count(_c(0, 0), _t(2026, 3, 31, 23))
    meter.count(_c(4_000, 0), _t(2026, 3, 31, 23, 30))
    assert meter.used_bytes == 4_000
    meter.count(_c(4_500, 0), _t(2026, 4, 1, 0, 5))
    assert meter.used_bytes == 500  # only what came since the last reading
    assert meter.period_end == _t(2026, 5, 1)


def test_the_used_volume_survives_a_restart_of_the_monitor(tmp_path: Path) -> None:
    path = tmp_path / "state" / "budget.json"
    meter = BudgetMeter(10_000, BudgetPeriod(), load_state(path).links.get("eth1"), _t(2026, 3, 2))
    meter.count(_c(0, 0), _t(2026, 3, 2))
    meter.count(_c(2_000, 1_000), _t(2026, 3, 2, 1))
    save_state(path, BudgetFile(links={"eth1": meter.usage}))
    assert [p.name for p in path.parent.iterdir()] == ["budget.json"]  # no temporary left
    # A new process: the saved count goes on, and the traffic of its downtime is counted.
    again = BudgetMeter(10_000, BudgetPeriod(), load_state(path).links["eth1"], _t(2026, 3, 3))
    assert again.used_bytes == 3_000
    again.count(_c(2_500, 1_000), _t(2026, 3, 3))
    assert again.used_bytes == 3_500


def test_a_restart_in_a_new_period_starts_from_zero_with_the_counters_as_baseline(
    tmp_path: Path,
) -> None:
    path = tmp_path / "budget.json"
    meter = BudgetMeter(10_000, BudgetPeriod(), None, _t(2026, 3, 30))
    meter.count(_c(0, 0), _t(2026, 3, 30))
    meter.count(_c(9_000, 0), _t(2026, 3, 30, 1))
    save_state(path, BudgetFile(links={"eth1": meter.usage}))
    again = BudgetMeter(10_000, BudgetPeriod(), load_state(path).links["eth1"], _t(2026, 4, 2))
    assert again.used_bytes == 0
    again.count(_c(9_100, 0), _t(2026, 4, 2))
    assert again.used_bytes == 100


def test_an_unreadable_state_file_counts_from_zero(tmp_path: Path) -> None:
    path = tmp_path / "budget.json"
    path.write_text("{not json")
    assert load_state(path) == BudgetFile()
    path.write_text(json.dumps({"version": 1, "links": {"eth1": {"used_bytes": -1}}}))
    assert load_state(path) == BudgetFile()


def test_human_bytes() -> None:
    assert human_bytes(10e9) == "10 GB"
    assert human_bytes(1_500_000) == "1.5 MB"
    assert human_bytes(12) == "12 B"


def _settings(link: dict[str, Any], **over: Any) -> MonitorSettings:
    base = {"interface": "eth1", "bid": 2, "technology": "lte"}
    return MonitorSettings.model_validate({"node": "mr1", "links": [{**base, **link}], **over})


def test_a_budget_needs_a_state_file() -> None:
    with pytest.raises(ValueError, match="budget_state"):
        _settings({"budget_bytes": 10**10})
    settings = _settings(
        {"budget_bytes": 10**10, "budget_period": {"kind": "monthly", "start_day": 5}},
        budget_state="/var/lib/multinet/budget.json",
    )
    assert settings.links[0].period.start_day == 5


def test_probe_intervals_fast_for_protected_relaxed_for_metered() -> None:
    probe = {"probe": {"target": "2001:db8::1"}}
    settings = MonitorSettings.model_validate(
        {
            "node": "mr1",
            "relaxed_interval_s": 30,
            "links": [
                {"interface": "eth0", "bid": 1, "technology": "wlan", "protected": True, **probe},
                {"interface": "eth1", "bid": 2, "technology": "lte", "metered": True, **probe},
                {"interface": "eth2", "bid": 3, "technology": "lte", **probe},
                {
                    "interface": "eth3",
                    "bid": 4,
                    "technology": "lte",
                    "metered": True,
                    "protected": True,
                    **probe,
                },
                {"interface": "eth4", "bid": 5, "technology": "nr", "interval_s": 2, **probe},
            ],
        }
    )
    assert [settings.interval_for(link) for link in settings.links] == [0.1, 30, 1.0, 0.1, 2]
