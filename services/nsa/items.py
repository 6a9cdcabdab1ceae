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


Item = Raw | CallResult | Reload | Stop | Fatal
