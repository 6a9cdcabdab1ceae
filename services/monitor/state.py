"""Whether a link is up, decided like mwan3's tracker from probe results and carrier.

A link goes down after `down_after` consecutive failed probes, or at once when the carrier is
lost. It comes back up only after `up_after` consecutive good probes with the carrier present;
probe results that arrive while there is no carrier do not count. Every input returns the
transition it caused, or None, so the caller decides what to publish.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field


class LinkStateSettings(BaseModel):
    """How many consecutive probe results it takes to change state."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    down_after: int = Field(default=3, ge=1, description="consecutive failed probes to go down")
    up_after: int = Field(default=3, ge=1, description="consecutive good probes to come up")


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of the link's up/down state, when it happened and why."""

    up: bool
    carrier: bool
    at: float
    reason: str


class LinkStateMachine:
    """Up/down state of one link. Starts down unless told otherwise."""

    def __init__(
        self,
        settings: LinkStateSettings | None = None,
        *,
        up: bool = False,
        carrier: bool = False,
    ) -> None:
        if up and not carrier:
            raise ValueError("a link cannot start up without carrier")
        self._settings = settings or LinkStateSettings()
        self._up = up
        self._carrier = carrier
        self._good = 0
        self._failed = 0

    @property
    def up(self) -> bool:
        """Whether the link can carry traffic."""
        return self._up

    @property
    def carrier(self) -> bool:
        """Whether the device reports carrier."""
        return self._carrier

    @property
    def good_streak(self) -> int:
        """Consecutive good probes counted so far."""
        return self._good

    @property
    def failed_streak(self) -> int:
        """Consecutive failed probes counted so far."""
        return self._failed

    def carrier_changed(self, present: bool, now: float) -> Transition | None:
        """Record the device's carrier. Losing it takes the link down at once."""
        if present == self._carrier:
            return None
        self._carrier = present
        self._good = 0
        self._failed = 0
        if not present and self._up:
            self._up = False
            return Transition(up=False, carrier=False, at=now, reason="carrier lost")
        return None

    def probe(self, ok: bool, now: float) -> Transition | None:
        """Record one probe result (answered in time, or lost)."""
        if not self._carrier:
            return None
        if ok:
            self._failed = 0
            self._good += 1
            if not self._up and self._good >= self._settings.up_after:
                self._up = True
                return Transition(
                    up=True,
                    carrier=True,
                    at=now,
                    reason=f"{self._good} consecutive probes answered",
                )
            return None
        self._good = 0
        self._failed += 1
        if self._up and self._failed >= self._settings.down_after:
            self._up = False
            return Transition(
                up=False, carrier=True, at=now, reason=f"{self._failed} consecutive probes failed"
            )
        return None
