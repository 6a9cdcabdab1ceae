"""What a scenario step waits for, judged from what was heard on the bus and counted on the MR.

Each check is a pure function of (condition, reference time, bus log, counter samples): it
returns when the condition first held and what showed it, or None. The reference is the
scenario's last action (or the stream's start): only what happened after it counts, so a
retained message or an earlier status can never satisfy a later step.

"Flows on eth1" is read from the MR's counters: over a sliding window, eth1 carries at least
`share` of the packets the two links carry in that direction (downlink = received by the MR,
uplink = sent), and at least `min_packets` of them. Besides the time the window first held,
the check reports `moved_at`: the first 100 ms interval after the reference in which the link
already carried most packets, which is how fast the flow moved.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from services.contracts.messages import BindingEvent, LinkMetrics, LinkState, PolicyStatus
from services.testbed import addressing as a
from services.testbed.counters import Sample
from services.testbed.recorder import Heard, PolicySent
from services.testbed.scenario import (
    BindingSeen,
    Condition,
    Enforced,
    FallbackSeen,
    Flows,
    LinkStateSeen,
    MetricsSeen,
)

NODE_IDS = {"ha": a.HA_NODE, "mr": a.MR_NODE}
LINKS = tuple(link.interface for link in a.MR_LINKS)


@dataclass(frozen=True)
class Met:
    """A condition held: since when, and the evidence."""

    at: float
    detail: dict[str, Any] = field(default_factory=dict)


def check(
    condition: Condition, since: float, heard: Sequence[Heard], samples: Sequence[Sample]
) -> Met | None:
    """When `condition` first held after `since`, or None if it does not (yet)."""
    if isinstance(condition, Flows):
        return flows(condition, since, samples)
    later = [h for h in heard if h.at >= since]
    if isinstance(condition, Enforced):
        return _enforced(condition, later)
    if isinstance(condition, FallbackSeen):
        node = NODE_IDS[condition.node]
        return _first(
            later,
            lambda m: isinstance(m, PolicyStatus) and m.node == node and m.result == "fallback",
        )
    if isinstance(condition, BindingSeen):
        return _first(
            later,
            lambda m: (
                isinstance(m, BindingEvent)
                and m.mobile_router == a.MOBILE_ROUTER
                and m.bid == condition.bid
                and m.event == condition.event
            ),
        )
    if isinstance(condition, LinkStateSeen):
        return _first(
            later,
            lambda m: (
                isinstance(m, LinkState)
                and m.interface == condition.interface
                and (m.up and m.carrier) == condition.up
            ),
        )
    return _metrics(condition, later)


def _first(heard: Sequence[Heard], wanted: Any) -> Met | None:
    for item in heard:
        if wanted(item.message):
            message = item.message
            detail = message.model_dump(mode="json") if hasattr(message, "model_dump") else {}
            return Met(item.at, {"message": detail})
    return None


def _enforced(condition: Enforced, heard: Sequence[Heard]) -> Met | None:
    """Each node applied a document that was published after the reference: its status names
    the version it was asked for, paired with the documents seen on the node's policy topic,
    so a status answering a document sent earlier does not count."""
    found: dict[str, Any] = {}
    times = []
    for node in condition.nodes:
        node_id = NODE_IDS[node]
        sent = {
            h.message.version
            for h in heard
            if isinstance(h.message, PolicySent) and h.message.node == node_id
        }
        status = next(
            (
                h
                for h in heard
                if isinstance(h.message, PolicyStatus)
                and h.message.node == node_id
                and h.message.result == "applied"
                and (h.message.requested_version or h.message.version) in sent
            ),
            None,
        )
        if status is None:
            return None
        assert isinstance(status.message, PolicyStatus)
        times.append(status.at)
        found[node] = {
            "at": status.at,
            "version": status.message.version,
            "elapsed_ms": status.message.elapsed_ms,
        }
    return Met(max(times), found)


def _metrics(condition: MetricsSeen, heard: Sequence[Heard]) -> Met | None:
    def crossed(message: object) -> bool:
        if not isinstance(message, LinkMetrics) or message.interface != condition.interface:
            return False
        value = getattr(message, condition.metric)
        if value is None:
            return False
        if condition.below is not None:
            return bool(value < condition.below)
        return condition.above is not None and bool(value > condition.above)

    return _first(heard, crossed)


def deltas(samples: Sequence[Sample], direction: str) -> list[tuple[float, dict[str, int]]]:
    """Packets per link between consecutive samples, stamped with the later sample's time."""
    out = []
    for before, after in itertools.pairwise(samples):
        counts = {}
        for name in LINKS:
            x, y = before.devices.get(name), after.devices.get(name)
            if x is None or y is None:
                counts[name] = 0
                continue
            rx, tx = max(0, y.rx_packets - x.rx_packets), max(0, y.tx_packets - x.tx_packets)
            counts[name] = {"rx": rx, "tx": tx, "both": rx + tx}[direction]
        out.append((after.at, counts))
    return out


def switch_time(
    samples: Sequence[Sample], since: float, target: str, direction: str, min_packets: int = 3
) -> float | None:
    """When the packets of `direction` moved to `target` after `since`, estimated inside the
    100 ms interval where the move shows.

    The interval is the first in which `target` carries most packets, or the one before it if
    `target` already carried some there. Inside it the move is placed from the share of the
    flow `target` got: its count against the rate it carries once moved (the median of the next
    intervals), so an interval that got a third of the usual packets saw the move at two thirds
    of its length, whether the old link carried the rest or had lost its carrier. Signalling
    (probes, BUs, neighbour discovery) is a packet or two per interval, so a link needs
    `min_packets` in an interval to count as carrying the flow.
    """
    window = [s for s in samples if s.at >= since - 0.1]
    series = deltas(window, direction)
    starts = [s.at for s in window]
    for k, (end, counts) in enumerate(series):
        mine = counts[target]
        if end < since or mine * 2 <= sum(counts.values()) or mine < min_packets:
            continue
        after = sorted(c[target] for _, c in series[k + 1 : k + 4]) or [mine]
        rate = max(after[len(after) // 2], mine)
        j = k
        if k > 0 and series[k - 1][0] > since and series[k - 1][1][target] >= min_packets:
            j = k - 1
        end_j, counts_j = series[j]
        fraction = min(1.0, counts_j[target] / rate)
        return max(since, end_j - (end_j - starts[j]) * fraction)
    return None


def first_packets(
    fine: Sequence[Sample],
    since: float,
    target: str,
    direction: str,
    *,
    count: int = 3,
    within_s: float = 0.1,
    second_within_s: float = 0.05,
) -> float | None:
    """When the flow's packets of `direction` first reached `target` after `since`, from the
    10 ms samples: the start of the first interval with a packet on `target` such that
    `target` counts a second packet within `second_within_s` and `count` within `within_s`,
    most of what the two links carried then. A lone probe or BU (one packet, the next half a
    second later) does not qualify; a stream of ACKs at 50 packets/s does."""
    window = [s for s in fine if s.at >= since - 0.01]
    series = deltas(window, direction)
    starts = [s.at for s in window]
    for k, (end, counts) in enumerate(series):
        if end <= since or counts[target] == 0:
            continue
        mine = total = early = 0
        for later_end, later in series[k:]:
            if later_end - starts[k] > within_s + 1e-9:
                break
            mine += later[target]
            total += sum(later.values())
            if later_end - starts[k] <= second_within_s + 1e-9:
                early += later[target]
        if mine >= count and early >= 2 and mine * 2 > total:
            return max(since, starts[k])
    return None


def flows(condition: Flows, since: float, samples: Sequence[Sample]) -> Met | None:
    """The sliding-window test described in the module docstring."""
    window = [s for s in samples if s.at >= since]
    directions = ("rx", "tx") if condition.direction == "both" else (condition.direction,)
    series = {d: deltas(window, d) for d in directions}
    length = max(1, round(condition.window_s / 0.1))
    count = len(next(iter(series.values())))
    for end in range(length, count + 1):
        if all(_holds(series[d][end - length : end], condition) for d in directions):
            at = series[directions[0]][end - 1][0]
            detail: dict[str, Any] = {
                f"moved_at_{d}": switch_time(samples, since, condition.interface, d)
                for d in directions
            }
            return Met(at, detail)
    return None


def _holds(part: list[tuple[float, dict[str, int]]], condition: Flows) -> bool:
    target = sum(counts[condition.interface] for _, counts in part)
    total = sum(sum(counts.values()) for _, counts in part)
    return total >= condition.min_packets and target >= condition.share * total
