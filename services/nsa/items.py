"""What the decision thread's inbox carries: bus inputs, call results, and control."""

from __future__ import annotations

from dataclasses import dataclass

from services.nsa.core.calls import CallResult
from services.nsa.core.routes import Raw


@dataclass(frozen=True)
class Reload:
    """Re-read the settings file (SIGHUP)."""


@dataclass(frozen=True)
class Stop:
    """Finish the decision loop (SIGTERM, SIGINT, `stop()`)."""


@dataclass(frozen=True)
class Fatal:
    """A background thread failed unexpectedly: the loop raises it, the service ends."""

    error: BaseException


@dataclass(frozen=True)
class Warm:
    """Rebuild a partition's routers from the bus without deciding (`services.nsa.leases`)."""

    partition: int


@dataclass(frozen=True)
class Gain:
    """Decide for a partition's routers from now on, under this epoch (the fencing token)."""

    partition: int
    epoch: int


@dataclass(frozen=True)
class Lose:
    """Stop deciding for a partition's routers at once: its lease is gone or handed over."""

    partition: int


@dataclass(frozen=True)
class Cool:
    """Forget a partition warmed for nothing (another replica should hold it after all)."""

    partition: int


Item = Raw | CallResult | Reload | Stop | Fatal | Warm | Gain | Lose | Cool
