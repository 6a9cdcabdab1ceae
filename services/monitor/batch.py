"""The periodic metrics of a node's links gathered into `NodeMetrics` messages (`batch_metrics`):
pure, so the event loop only feeds it and tests step a fake clock.

Why: at fleet scale the broker and the NSA pay per message, not per byte (~27 us of mosquitto's
CPU per message whatever its size), and a mobile router's monitor sends over metered links. One
message per node and period instead of one per link cuts both by the number of links.

The rules, in the order they are checked:

- a report made at once on a material change (a radio change, a brownout edge, a lost probe;
  anything but the periodic `tick`) goes out at once, with every report waiting beside it:
  batching must never delay what the NSA has to react to;
- a periodic report waits; a newer one of the same link replaces it (metrics are "latest wins"
  on the bus as well, and the newer one is the truer);
- the waiting reports go out once every link has reported since the last message (the usual
  case: a node's rounds run in step, so the batch fills within a few milliseconds), or at the
  latest one report period of a link after its report began waiting (`deadline`), so that a
  link that stops reporting, or reports less often, never holds the others back. The deadline
  comes before that link's own next periodic report, so in steady running none is replaced;
- a message carries at most `NODE_METRICS_LINKS` links: more waiting reports go out as several
  messages (a node with that many links is odd, but its settings are valid without batching,
  so they stay valid with it).

Entries keep their own timestamp and sequence (the link tracker's); the message has its own:
`wall` (unix time, given by the caller) and a sequence counting this node's messages from 1.
"""

from __future__ import annotations

from collections.abc import Mapping

from services.contracts.messages import NODE_METRICS_LINKS, LinkMetrics, NodeMetrics


class MetricsBatch:
    """The periodic reports of one node's links waiting to go out together.

    `periods`: every link the node watches (its interface) and how often its periodic report
    comes (seconds), in the order the links are configured, which is the order of the entries
    of a message. `now` is monotonic time, `wall` unix time; both are given by the caller.
    """

    def __init__(
        self, node: str, periods: Mapping[str, float], *, limit: int = NODE_METRICS_LINKS
    ) -> None:
        if not periods:
            raise ValueError("a batch needs at least one link")
        if not 1 <= limit <= NODE_METRICS_LINKS:
            raise ValueError(f"limit must be 1..{NODE_METRICS_LINKS}, not {limit}")
        bad = [name for name, period in periods.items() if not period > 0]
        if bad:
            raise ValueError(f"report periods must be positive: {', '.join(bad)}")
        self.node = node
        self.limit = limit
        self._periods = dict(periods)
        self._order = {name: index for index, name in enumerate(periods)}
        self._pending: dict[str, LinkMetrics] = {}
        self._deadline: float | None = None
        self._sequence = 0

    @property
    def deadline(self) -> float | None:
        """When the waiting reports must go out at the latest (None: nothing waits)."""
        return self._deadline

    @property
    def pending(self) -> tuple[str, ...]:
        """The links whose report waits, in configuration order."""
        return tuple(sorted(self._pending, key=self._order.__getitem__))

    def add(
        self, message: LinkMetrics, *, periodic: bool, now: float, wall: float
    ) -> list[NodeMetrics]:
        """Take one link's report; return the messages to publish now (often none).

        `periodic`: the report is the link's periodic one (`LinkTracker.tick`); anything else
        is a material change and goes out at once with whatever waits.
        """
        if message.interface not in self._periods:
            raise ValueError(f"link {message.interface!r} is not one of node {self.node}'s")
        if message.sender != self.node:
            raise ValueError(f"a report of node {message.sender!r} in node {self.node}'s batch")
        self._pending[message.interface] = message
        if not periodic or len(self._pending) == len(self._periods):
            return self.flush(wall)
        due = now + self._periods[message.interface]
        if self._deadline is None or due < self._deadline:
            self._deadline = due
        return []

    def due(self, now: float, wall: float) -> list[NodeMetrics]:
        """The waiting reports if their deadline has come (the loop's timer), else nothing."""
        if self._deadline is None or now < self._deadline:
            return []
        return self.flush(wall)

    def flush(self, wall: float) -> list[NodeMetrics]:
        """Every waiting report now, whatever the deadline (also at shutdown)."""
        entries = [self._pending[name] for name in self.pending]
        self._pending.clear()
        self._deadline = None
        out = []
        for start in range(0, len(entries), self.limit):
            self._sequence += 1
            out.append(
                NodeMetrics(
                    sender=self.node,
                    timestamp=wall,
                    sequence=self._sequence,
                    links=tuple(entries[start : start + self.limit]),
                )
            )
        return out
