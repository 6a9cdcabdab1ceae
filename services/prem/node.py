"""Bringing a node's enforcement up, shared by the MQTT worker and the standalone daemon.

Both run one main loop fed by one bounded queue; these are the items other threads put on it
(besides their own document type) and the start-up they share.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from services.prem import routing
from services.prem.backends import make_backend
from services.prem.config import PremSettings
from services.prem.enforcer import Enforcer
from services.prem.linkwatch import LinkWatcher


@dataclass(frozen=True)
class Usability:
    """The link watcher's new set of unusable BIDs."""

    unusable: frozenset[int]


@dataclass(frozen=True)
class Fatal:
    """A background thread died: the main loop raises, the supervisor restarts the process."""

    error: BaseException


class Stop:
    """Finish the main loop (SIGTERM, SIGINT or `stop()`)."""


def start_enforcement(
    settings: PremSettings,
    on_usability: Callable[[frozenset[int]], None],
    on_fatal: Callable[[BaseException], None],
) -> tuple[Enforcer, LinkWatcher, int]:
    """Enforcer, policy-routing rules and link watcher, in the current network namespace.

    Returns them with the number of rule changes the first reconciliation made (the kernel is
    brought to the stored desired state before any new document is taken).
    """
    enforcer = Enforcer(settings, make_backend(settings))
    routing.ensure_rules(settings)
    watcher = LinkWatcher(settings, on_usability, on_error=on_fatal)
    watcher.start()
    enforcer.unusable = watcher.current()
    return enforcer, watcher, enforcer.reconcile()
