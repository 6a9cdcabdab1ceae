"""Brownout detection: a link that still answers, but too slowly or with too much loss: pure.

The periodic metrics and their EWMA (gain 1/8) take seconds to show a delay step; a class
with a delay bound must leave the link within half a second. So every settled probe of a
link with thresholds goes through a `BrownoutDetector`, which looks at a short window of the
last probes:

- onset: the probe just answered took longer than `delay_ms`, or the loss over the short
  window exceeds `loss`. The first probe over the threshold is enough: at 10 Hz the onset is
  reported within one probe interval plus the RTT itself.
- clear (hysteresis): every one of the last `clear_after` answered probes is at or below
  `clear_fraction x delay_ms` and the window's loss at or below `clear_fraction x loss`.
  Between onset and clear nothing more is reported, so an RTT oscillating around the
  threshold gives one onset, not one report per probe.

The thresholds are the monitor's (`brownout_delay_ms`, `brownout_loss` per link): the
classes' requirements live at the NSA, so an operator copies the tightest `max_delay_ms` and
`max_loss` of the classes that may use the link.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class BrownoutSettings(BaseModel):
    """How the short window and the hysteresis work (the `[monitor.brownout]` table)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window: int = Field(default=10, ge=2, le=1000, description="settled probes for loss")
    clear_after: int = Field(
        default=5, ge=1, le=1000, description="consecutive healthy probes to clear"
    )
    clear_fraction: float = Field(
        default=0.8, gt=0, le=1, description="healthy: at or below this fraction of a bound"
    )


class Edge(StrEnum):
    """A brownout begins or ends."""

    ONSET = "onset"
    CLEAR = "clear"


@dataclass(frozen=True, slots=True)
class BrownoutEvent:
    """What the detector saw, for the log and the immediate report."""

    edge: Edge
    reason: str
    rtt_ms: float | None  # the probe that caused it (None: a loss)
    loss: float  # over the short window


class BrownoutDetector:
    """The brownout state of one link, fed with every settled probe in order."""

    def __init__(
        self,
        delay_ms: float | None,
        loss: float | None,
        settings: BrownoutSettings | None = None,
    ) -> None:
        if delay_ms is None and loss is None:
            raise ValueError("a brownout detector needs a delay or a loss threshold")
        self.delay_ms = delay_ms
        self.loss_threshold = loss
        self.settings = settings or BrownoutSettings()
        self._recent: deque[float | None] = deque(maxlen=self.settings.window)  # ms / lost
        self._healthy = 0
        self.active = False
        self.onsets = 0

    @property
    def loss(self) -> float:
        """Loss over the short window (0 before any probe settled)."""
        if not self._recent:
            return 0.0
        return sum(1 for r in self._recent if r is None) / len(self._recent)

    @property
    def last_rtt_ms(self) -> float | None:
        """The RTT of the newest answered probe in the window."""
        for rtt in reversed(self._recent):
            if rtt is not None:
                return rtt
        return None

    def answered(self, rtt_ms: float) -> BrownoutEvent | None:
        """One probe answered after `rtt_ms`."""
        self._recent.append(rtt_ms)
        return self._step(rtt_ms)

    def lost(self) -> BrownoutEvent | None:
        """One probe timed out."""
        self._recent.append(None)
        return self._step(None)

    def _step(self, rtt_ms: float | None) -> BrownoutEvent | None:
        loss = self.loss
        if not self.active:
            reason = self._onset_reason(rtt_ms, loss)
            if reason is None:
                return None
            self.active = True
            self.onsets += 1
            self._healthy = 0
            return BrownoutEvent(Edge.ONSET, reason, rtt_ms, loss)
        if self._healthy_probe(rtt_ms, loss):
            self._healthy += 1
        else:
            self._healthy = 0
        if self._healthy < self.settings.clear_after:
            return None
        self.active = False
        self._healthy = 0
        return BrownoutEvent(Edge.CLEAR, "healthy again", rtt_ms, loss)

    def _onset_reason(self, rtt_ms: float | None, loss: float) -> str | None:
        if self.delay_ms is not None and rtt_ms is not None and rtt_ms > self.delay_ms:
            return f"rtt {rtt_ms:.1f} ms > {self.delay_ms:g} ms"
        if self.loss_threshold is not None and loss > self.loss_threshold:
            return f"loss {loss:.0%} over the last {len(self._recent)} probes > " + (
                f"{self.loss_threshold:.0%}"
            )
        return None

    def _healthy_probe(self, rtt_ms: float | None, loss: float) -> bool:
        fraction = self.settings.clear_fraction
        if rtt_ms is None:
            return False
        if self.delay_ms is not None and rtt_ms > fraction * self.delay_ms:
            return False
        return not (self.loss_threshold is not None and loss > fraction * self.loss_threshold)
