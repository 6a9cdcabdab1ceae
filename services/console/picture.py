"""The pure picture behind a lock: paho's thread feeds it, the web's event loop reads it.

Each read takes the lock for the time of building one event's data (rows changed since a
revision, one router's view), never across an await, so neither side waits long on the other.

A router's page is woken by the feeding thread when its router's fleet row changes (`watch`):
its stream then sends the change at once instead of finding it at its next poll.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.console.core import ConsoleState
from services.contracts.topics import TopicName


@dataclass(slots=True)
class FleetCursor:
    """What one fleet stream has sent: row revision, alert log sequence, nodes revision."""

    revision: int = 0
    alerts: int = 0
    nodes: int = -1


class Picture:
    """A `ConsoleState` shared between threads."""

    def __init__(self, state: ConsoleState, clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.clock = clock
        self.lock = threading.Lock()
        #: router -> (its row revision when last looked at, the wake-ups of its watchers)
        self._watches: dict[str, tuple[int, list[Callable[[], None]]]] = {}

    def feed(self, topic: TopicName, message: object) -> bool:
        """Hand one parsed message to the state (see `ConsoleState.feed`); wake the watchers
        of a router whose row it changed."""
        with self.lock:
            taken = self.state.feed(topic, message, self.clock())
            if self._watches:
                self._wake()
            return taken

    def watch(self, name: str, wake: Callable[[], None]) -> Callable[[], None]:
        """Call `wake` whenever router `name`'s fleet row changes (a link's state, an alert, a
        binding, a mismatch); it runs in the feeding thread under the lock, so it must only
        schedule (e.g. `loop.call_soon_threadsafe`). Returns the function that stops it."""
        with self.lock:
            revision, wakes = self._watches.get(name, (self.state.row_revision(name), []))
            wakes.append(wake)
            self._watches[name] = (revision, wakes)

        def unwatch() -> None:
            with self.lock:
                _, current = self._watches.get(name, (0, []))
                if wake in current:
                    current.remove(wake)
                if not current:
                    self._watches.pop(name, None)

        return unwatch

    def _wake(self) -> None:
        """O(routers watched): a handful of open router pages, not the fleet."""
        for name, (seen, wakes) in self._watches.items():
            revision = self.state.row_revision(name)
            if revision != seen:
                self._watches[name] = (revision, wakes)
                for wake in wakes:
                    wake()

    def tick(self) -> None:
        """Let what has expired go."""
        with self.lock:
            self.state.tick(self.clock())

    def fleet(self, cursor: FleetCursor) -> dict[str, Any] | None:
        """The fleet event after `cursor` (None: nothing new), and `cursor` moved past it."""
        state = self.state
        with self.lock:
            full = cursor.revision == 0
            if not full and state.revision == cursor.revision:
                return None
            revision, rows = state.rows_since(cursor.revision)
            sequence, alerts = state.alerts_since(cursor.alerts)
            nodes = state.other_nodes() if state.node_revision != cursor.nodes else None
            node_revision = state.node_revision
            totals = dict(state.totals)
        cursor.revision, cursor.alerts, cursor.nodes = revision, sequence, node_revision
        if not full and not rows and not alerts and nodes is None:
            return None
        event: dict[str, Any] = {"full": full, "totals": totals, "rows": rows, "alerts": alerts}
        if nodes is not None:
            event["nodes"] = nodes
        return event

    def row_revision(self, name: str) -> int:
        """See `ConsoleState.row_revision`."""
        with self.lock:
            return self.state.row_revision(name)

    def router(self, name: str, revision: int, after: float | None) -> dict[str, Any] | None:
        """The router's view if it changed after `revision` (None: unchanged or unknown)."""
        with self.lock:
            router = self.state.routers.get(name)
            if router is None or router.revision <= revision:
                return None
            return self.state.router_view(name, after)
