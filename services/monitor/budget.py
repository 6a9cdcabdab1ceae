"""Data budgets: the volume a metered link has carried in its billing period, kept across
restarts.

A link with `budget_bytes` counts every byte its interface counters show (received and
sent) into the current billing period (`budget_period`: monthly from a start day, or every N
days from a start date, in UTC). The counters only grow while the device lives; a reading
below the previous one means they started again from zero (a re-created device, a reboot),
and then all they show is new traffic.

The used volume is kept in a small JSON state file (one per monitor, every budgeted link in
it), written atomically (a temporary file, fsync, rename) at most every `save_every_s` and at
shutdown, so a restart loses at most that much counting and never a half-written file.
A monitor restarted while the device lives finds counters above the saved ones and counts the
traffic of its downtime too.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.durable import replace_file
from services.monitor.counters import Counters

log = logging.getLogger(__name__)


class BudgetPeriod(BaseModel):
    """A billing period: `monthly` from `start_day` (1-28), or `days` long from `start`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["monthly", "days"] = "monthly"
    start_day: int = Field(default=1, ge=1, le=28, description="monthly: the day it begins")
    days: int = Field(default=30, ge=1, le=3660, description="days: the period's length")
    start: date = Field(default=date(2024, 1, 1), description="days: a day a period began")

    def bounds(self, at: float) -> tuple[float, float]:
        """The (start, end) of the period holding unix time `at`, as unix times."""
        now = datetime.fromtimestamp(at, UTC)
        if self.kind == "days":
            origin = datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC)
            length = timedelta(days=self.days)
            begin = origin + length * ((now - origin) // length)
            return begin.timestamp(), (begin + length).timestamp()
        year, month = now.year, now.month
        if now.day < self.start_day:
            year, month = (year - 1, 12) if month == 1 else (year, month - 1)
        begin = datetime(year, month, self.start_day, tzinfo=UTC)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        end = datetime(year, month, self.start_day, tzinfo=UTC)
        return begin.timestamp(), end.timestamp()


class LinkUsage(BaseModel):
    """One link's count in the state file."""

    model_config = ConfigDict(extra="forbid")

    period_start: float
    period_end: float
    used_bytes: int = Field(default=0, ge=0)
    rx_bytes: int | None = Field(default=None, description="the counters last counted")
    tx_bytes: int | None = None


class BudgetFile(BaseModel):
    """The state file: every budgeted link by interface name."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    links: dict[str, LinkUsage] = Field(default_factory=dict)


class BudgetMeter:
    """The used volume of one link in its current period (pure: times and counters given)."""

    def __init__(
        self, budget_bytes: int, period: BudgetPeriod, usage: LinkUsage | None, at: float
    ) -> None:
        self.budget_bytes = budget_bytes
        self.period = period
        start, end = period.bounds(at)
        if usage is None:
            usage = LinkUsage(period_start=start, period_end=end)
        elif (usage.period_start, usage.period_end) != (start, end):
            # The saved count belongs to another period (or another period setting): the
            # counters stay the baseline, the volume starts from zero.
            usage = LinkUsage(
                period_start=start, period_end=end, rx_bytes=usage.rx_bytes, tx_bytes=usage.tx_bytes
            )
        self.usage = usage

    @property
    def used_bytes(self) -> int:
        """Bytes counted in the current period."""
        return self.usage.used_bytes

    @property
    def period_end(self) -> float:
        """When the current period ends (unix time)."""
        return self.usage.period_end

    @property
    def share(self) -> float:
        """Used / budget."""
        return self.usage.used_bytes / self.budget_bytes

    def count(self, counters: Counters, at: float) -> None:
        """A counter reading at unix time `at`: add what is new, roll the period over."""
        self.roll(at)
        usage = self.usage
        rx, tx = counters.rx_bytes, counters.tx_bytes
        if usage.rx_bytes is None or usage.tx_bytes is None:
            added = 0  # the first reading ever: only the baseline
        else:
            added = (rx - usage.rx_bytes if rx >= usage.rx_bytes else rx) + (
                tx - usage.tx_bytes if tx >= usage.tx_bytes else tx
            )
        usage.used_bytes += added
        usage.rx_bytes, usage.tx_bytes = rx, tx

    def roll(self, at: float) -> bool:
        """Start a new period if `at` is past the current one's end; True if it did."""
        if at < self.usage.period_end:
            return False
        start, end = self.period.bounds(at)
        self.usage = LinkUsage(
            period_start=start,
            period_end=end,
            rx_bytes=self.usage.rx_bytes,
            tx_bytes=self.usage.tx_bytes,
        )
        return True


def load_state(path: Path) -> BudgetFile:
    """The saved counts; an absent file is empty, an unreadable one is logged and ignored."""
    try:
        return BudgetFile.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return BudgetFile()
    except (OSError, ValidationError, ValueError) as exc:
        log.error("budget state %s unreadable, counting from zero: %s", path, exc)
        return BudgetFile()


def save_state(path: Path, state: BudgetFile) -> None:
    """Write the counts atomically: a temporary file beside it, fsync, rename, fsync the dir."""
    replace_file(path, json.dumps(state.model_dump(mode="json"), sort_keys=True).encode())


def human_bytes(value: float) -> str:
    """`10 GB`, `1.5 MB`: decimal units, as operators bill."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value:.0f} B"
