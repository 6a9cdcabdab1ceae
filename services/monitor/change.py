"""When to publish link metrics: every period, and at once when they changed materially.

"Materially" means against the values last published, not the previous measurement, so a slow
drift is published once it has added up to a threshold. Defaults: 1 percentage point of loss and
30 ms of delay (the thresholds issue 4 asks for, after flexiWAN). A metric that appears or
disappears (None on one side only) is a material change too.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

_EPSILON = 1e-9  # so that 0.03 - 0.02 counts as one percentage point


class ChangeSettings(BaseModel):
    """The publication period and the thresholds of a material change."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    period_s: float = Field(default=10.0, gt=0, description="publish at least this often")
    loss_delta: float = Field(
        default=0.01, gt=0, le=1, description="loss change (fraction: 0.01 is 1 point)"
    )
    delay_delta_ms: float = Field(default=30.0, gt=0, description="RTT change in ms")
    jitter_delta_ms: float | None = Field(
        default=None, gt=0, description="jitter change in ms; None: jitter alone never triggers"
    )


@dataclass(frozen=True, slots=True)
class Published:
    """The values last published, and when."""

    at: float
    loss: float | None
    rtt_ms: float | None
    jitter_ms: float | None = None


class ChangeDetector:
    """Remembers the last publication of one link and says when the next one is due."""

    def __init__(self, settings: ChangeSettings | None = None) -> None:
        self._settings = settings or ChangeSettings()
        self._last: Published | None = None

    @property
    def last(self) -> Published | None:
        """The last publication recorded with `published`, if any."""
        return self._last

    def due(self, now: float) -> bool:
        """Whether the periodic publication is due (always, before the first one)."""
        return self._last is None or now - self._last.at >= self._settings.period_s

    def material(
        self, loss: float | None, rtt_ms: float | None, jitter_ms: float | None = None
    ) -> str | None:
        """Why these values differ materially from the last published ones, or None."""
        last = self._last
        if last is None:
            return "first publication"
        settings = self._settings
        checks: tuple[tuple[str, float | None, float | None, float | None, float], ...] = (
            ("loss", last.loss, loss, settings.loss_delta, 100.0),
            ("rtt", last.rtt_ms, rtt_ms, settings.delay_delta_ms, 1.0),
            ("jitter", last.jitter_ms, jitter_ms, settings.jitter_delta_ms, 1.0),
        )
        for name, old, new, threshold, scale in checks:
            if threshold is None or old == new:
                continue
            unit = "%" if scale != 1.0 else " ms"
            if old is None or new is None:
                return f"{name} {_show(old, scale, unit)} -> {_show(new, scale, unit)}"
            if abs(new - old) >= threshold - _EPSILON:
                return f"{name} {_show(old, scale, unit)} -> {_show(new, scale, unit)}"
        return None

    def should_publish(
        self,
        now: float,
        loss: float | None,
        rtt_ms: float | None,
        jitter_ms: float | None = None,
    ) -> str | None:
        """Why to publish now (a material change, or the period), or None to wait."""
        reason = self.material(loss, rtt_ms, jitter_ms)
        if reason is not None:
            return reason
        if self.due(now):
            return "period"
        return None

    def published(
        self,
        now: float,
        loss: float | None,
        rtt_ms: float | None,
        jitter_ms: float | None = None,
    ) -> None:
        """Record what was published at `now`; later comparisons are against these values."""
        self._last = Published(at=now, loss=loss, rtt_ms=rtt_ms, jitter_ms=jitter_ms)


def _show(value: float | None, scale: float, unit: str) -> str:
    return "none" if value is None else f"{value * scale:g}{unit}"
