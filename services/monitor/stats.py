"""Per-link probe statistics over a sliding window of the last N settled probes.

A probe is sent at time `t` and is then either answered (its RTT is `now - t`) or times out and
counts as lost. Only settled probes enter the window, so a probe still in flight neither lowers
nor raises the loss ratio: `loss = lost / (answered + lost)` over the window.

Jitter follows RFC 3550 section 6.4.1, `J += (|D| - J) / 16`, adapted to round-trip probes: the
RFC's D is the difference of one-way transit times of two consecutive packets; a round-trip
probe has no one-way transit time, so D is the difference of the RTTs of two consecutive
answers (in the order they arrived). The result therefore mixes the variation of both
directions. Like RFC 3550's J, the jitter and the RTT EWMA are running estimators that are not
limited to the window; `rtt_mean_ms` is the plain mean over the answered probes in the window.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

JITTER_GAIN = 1 / 16  # RFC 3550 6.4.1


class ProbeSettings(BaseModel):
    """How many settled probes the window keeps, and the gain of the RTT EWMA."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window: int = Field(default=20, ge=1, description="settled probes kept for loss and mean")
    ewma_alpha: float = Field(
        default=0.125, gt=0, le=1, description="weight of the newest RTT (RFC 6298 uses 1/8)"
    )


@dataclass(frozen=True, slots=True)
class ProbeStats:
    """What the window says about one link at one moment. Times in milliseconds."""

    window: int
    answered: int
    lost: int
    pending: int
    late: int
    loss: float | None
    rtt_last_ms: float | None
    rtt_mean_ms: float | None
    rtt_ewma_ms: float | None
    jitter_ms: float | None

    @property
    def settled(self) -> int:
        """Probes in the window (answered or lost)."""
        return self.answered + self.lost


class ProbeWindow:
    """Probe bookkeeping for one link: feed it sends, answers and timeouts; read `snapshot()`.

    At most `window` probes may be outstanding: sending one more settles the oldest outstanding
    probe as lost, since by then it is `window` probes old.
    """

    def __init__(self, settings: ProbeSettings | None = None) -> None:
        self._settings = settings or ProbeSettings()
        self._pending: OrderedDict[int, float] = OrderedDict()  # seq -> send time, oldest first
        self._settled: deque[float | None] = deque(maxlen=self._settings.window)  # rtt s / lost
        self._late = 0
        self._rtt_last: float | None = None
        self._rtt_ewma: float | None = None
        self._jitter: float | None = None

    @property
    def settings(self) -> ProbeSettings:
        """The settings this window was made with."""
        return self._settings

    def sent(self, seq: int, now: float) -> None:
        """Record that probe `seq` left at `now`. A `seq` still outstanding is a caller bug."""
        if seq in self._pending:
            raise ValueError(f"probe {seq} is already outstanding")
        if len(self._pending) >= self._settings.window:
            self._pending.popitem(last=False)
            self._settled.append(None)
        self._pending[seq] = now

    def answered(self, seq: int, now: float) -> float | None:
        """Record the answer to probe `seq`; return its RTT in seconds.

        An answer to a probe that is not outstanding (unknown, duplicate, or already timed out)
        is counted in `late` and otherwise ignored; it returns None.
        """
        sent_at = self._pending.get(seq)
        if sent_at is None:
            self._late += 1
            return None
        if now < sent_at:
            raise ValueError(f"probe {seq} answered at {now} before it was sent at {sent_at}")
        del self._pending[seq]
        rtt = now - sent_at
        self._settled.append(rtt)
        if self._rtt_last is not None:
            delta = abs(rtt - self._rtt_last)
            jitter = self._jitter or 0.0
            self._jitter = jitter + (delta - jitter) * JITTER_GAIN
        alpha = self._settings.ewma_alpha
        previous = self._rtt_ewma
        self._rtt_ewma = rtt if previous is None else alpha * rtt + (1 - alpha) * previous
        self._rtt_last = rtt
        return rtt

    def timed_out(self, now: float, timeout_s: float) -> tuple[int, ...]:
        """Settle as lost every outstanding probe sent more than `timeout_s` before `now`.

        Returns the sequence numbers that were lost, oldest first.
        """
        if timeout_s < 0:
            raise ValueError(f"timeout_s must not be negative, got {timeout_s}")
        lost = tuple(seq for seq, sent_at in self._pending.items() if now - sent_at > timeout_s)
        for seq in lost:
            del self._pending[seq]
            self._settled.append(None)
        return lost

    def snapshot(self) -> ProbeStats:
        """The statistics as of now (the window changes only through the three calls above)."""
        rtts = [rtt for rtt in self._settled if rtt is not None]
        lost = len(self._settled) - len(rtts)
        settled = len(self._settled)
        return ProbeStats(
            window=self._settings.window,
            answered=len(rtts),
            lost=lost,
            pending=len(self._pending),
            late=self._late,
            loss=lost / settled if settled else None,
            rtt_last_ms=_ms(self._rtt_last),
            rtt_mean_ms=_ms(sum(rtts) / len(rtts)) if rtts else None,
            rtt_ewma_ms=_ms(self._rtt_ewma),
            jitter_ms=_ms(self._jitter),
        )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0
