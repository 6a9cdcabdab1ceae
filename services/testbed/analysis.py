"""From a run's raw measurements to its timeline and figures of merit (pure).

Times are seconds since t0 (the stream's start) for positions on the time axis and
milliseconds after the step's reference (its own action, or the last one before it) for
delays. What is measured, per step:

- a policy delivery (SOAP call, or rules/preferences the NSA acts on): when each node's PREM
  reported it applied (its status on the bus), and when the document reached its policy topic;
- a link event (carrier, handover, care-of address): the monitor's link state, the binding
  events, a PREM's local fallback, and any policy the decider sent in reaction;
- flows: when the stream's packets (downlink, received by the MR) and its ACKs (uplink, sent)
  moved to the interface, estimated from the 100 ms counters (see `conditions.switch_time`).

And for the whole run: packets per second per MR interface every 100 ms (the figure), the
longest gap in the stream as the receiver saw it, the CN's TCP retransmissions and the bytes
delivered.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from services.contracts.messages import BindingEvent, LinkMetrics, LinkState, PolicyStatus
from services.testbed import addressing as a
from services.testbed import tcpstats, voice
from services.testbed.conditions import LINKS, deltas, first_packets, switch_time
from services.testbed.counters import Sample
from services.testbed.recorder import Heard, PolicySent
from services.testbed.rundata import RunData
from services.testbed.scenario import Flows
from services.testbed.timeline import StepResult

POLICY_ACTIONS = frozenset(
    {
        "install-policies",
        "update-policies",
        "flush-policies",
        "publish-rules",
        "publish-preferences",
    }
)
LINK_ACTIONS = frozenset({"detach", "attach", "carrier", "care-of"})
GAP_REPORTED_MS = 200.0


def _ms(value: float | None, since: float) -> float | None:
    return None if value is None else round((value - since) * 1000, 1)


def series(samples: Sequence[Sample], t0: float) -> dict[str, Any]:
    """Packets per second per interface and direction, per sampling interval."""
    out: dict[str, Any] = {"t": [], **{name: {"rx": [], "tx": []} for name in LINKS}}
    rx, tx = deltas(samples, "rx"), deltas(samples, "tx")
    for k, ((end, rx_counts), (_, tx_counts)) in enumerate(zip(rx, tx, strict=True)):
        span = end - samples[k].at or 0.1
        out["t"].append(round(end - t0, 3))
        for name in LINKS:
            out[name]["rx"].append(round(rx_counts[name] / span, 1))
            out[name]["tx"].append(round(tx_counts[name] / span, 1))
    return out


def stream_stats(record: dict[str, Any], t0: float) -> dict[str, Any]:
    """Bytes delivered, goodput and the longest gap between reads at the receiver."""
    reads = [(float(t), int(n)) for t, n in record.get("reads", [])]
    stats: dict[str, Any] = {"error": record.get("error", "no record"), "bytes": 0}
    if not reads:
        return stats
    total = sum(n for _, n in reads)
    duration = reads[-1][0] - reads[0][0]
    gaps = [(b[0] - a[0], a[0]) for a, b in itertools.pairwise(reads)]
    longest, where = max(gaps, default=(0.0, reads[0][0]))
    stats.update(
        bytes=total,
        first_byte_s=round(reads[0][0] - t0, 3),
        duration_s=round(duration, 3),
        goodput_bps=round(total * 8 / duration) if duration > 0 else None,
        longest_gap_ms=round(longest * 1000, 1),
        longest_gap_at_s=round(where - t0, 3),
        gaps_over_200ms=[
            {"at_s": round(at - t0, 3), "ms": round(gap * 1000, 1)}
            for gap, at in gaps
            if gap * 1000 > GAP_REPORTED_MS
        ],
    )
    return stats


def _first(heard: Sequence[Heard], since: float, wanted: Any) -> Heard | None:
    return next((h for h in heard if h.at >= since and wanted(h.message)), None)


def _per_node(heard: Sequence[Heard], since: float) -> dict[str, Any]:
    """Per node: when a policy document reached it and when it reported it applied."""
    nodes: dict[str, Any] = {}
    for key, node in (("ha", a.HA_NODE), ("mr", a.MR_NODE)):
        sent = _first(heard, since, lambda m, n=node: isinstance(m, PolicySent) and m.node == n)
        applied = _first(
            heard,
            since,
            lambda m, n=node: isinstance(m, PolicyStatus) and m.node == n and m.result == "applied",
        )
        status = applied.message if applied is not None else None
        nodes[key] = {
            "document_ms": _ms(sent.at if sent else None, since),
            "enforced_ms": _ms(applied.at if applied else None, since),
            "version": status.version if isinstance(status, PolicyStatus) else None,
            "prem_ms": status.elapsed_ms if isinstance(status, PolicyStatus) else None,
        }
    return nodes


def moved(data: RunData, since: float, target: str, direction: str) -> float | None:
    """When the flow moved to `target`: from the 10 ms samples, else estimated from the
    100 ms ones."""
    if data.fine_samples:
        return first_packets(data.fine_samples, since, target, direction)
    return switch_time(data.samples, since, target, direction)


def _link_reactions(result: StepResult, data: RunData, until: float) -> dict[str, Any]:
    """What followed a link event, up to the next action (`until`)."""
    assert result.action is not None
    since = result.action.started
    heard = data.heard
    link = str(result.action.detail.get("link", ""))
    bid = a.mr_link(link).bid if link else None
    state = _first(heard, since, lambda m: isinstance(m, LinkState) and m.interface == link)
    fallback = _first(
        heard,
        since,
        lambda m: isinstance(m, PolicyStatus) and m.node == a.MR_NODE and m.result == "fallback",
    )
    events = [
        {"event": h.message.event.value, "ms": _ms(h.at, since)}
        for h in heard
        if since <= h.at < until and isinstance(h.message, BindingEvent) and h.message.bid == bid
    ][:4]
    others = [name for name in LINKS if name != link]
    leaving = result.action.action == "detach" or (
        result.action.action == "carrier" and not result.action.detail.get("up")
    )
    target = others[0] if leaving and others else link
    return {
        "link_state_ms": _ms(state.at if state else None, since),
        "mr_fallback_ms": _ms(fallback.at if fallback else None, since),
        "binding_events": events,
        "flows_to": target,
        "downlink_moved_ms": _ms(moved(data, since, target, "rx"), since),
        "uplink_moved_ms": _ms(moved(data, since, target, "tx"), since),
    }


def step_rows(data: RunData) -> list[dict[str, Any]]:
    """One row per step: where it sits on the time axis and what was measured."""
    rows = []
    actions = [r.action.started for r in data.steps if r.action is not None]
    for result in data.steps:
        row: dict[str, Any] = {
            "index": result.index,
            "label": result.step.label,
            "title": result.step.title(),
            "t_s": round(result.marker() - data.t0, 3),
            "reference_s": round(result.reference - data.t0, 3),
        }
        if result.action is not None:
            action = result.action
            row["action"] = {
                "name": action.action,
                "took_ms": _ms(action.returned, action.started),
                **action.detail,
            }
            if action.action in POLICY_ACTIONS:
                row["delivery"] = _per_node(data.heard, action.started)
            if action.action in LINK_ACTIONS:
                until = next((t for t in actions if t > action.started), data.ended)
                row["link"] = _link_reactions(result, data, until)
        row["conditions"] = [
            _condition(condition, met.at, met.detail, result.reference, data)
            for condition, met in result.met
        ]
        rows.append(row)
    return rows


def _condition(
    condition: Any, at: float, detail: dict[str, Any], since: float, data: RunData
) -> dict[str, Any]:
    out: dict[str, Any] = {"until": condition.until, "after_ms": _ms(at, since)}
    if isinstance(condition, Flows):
        out["interface"] = condition.interface
        for key in detail:
            direction = key.removeprefix("moved_at_")
            found = moved(data, since, condition.interface, direction)
            out[f"moved_ms_{direction}"] = _ms(found, since)
    elif condition.until == "enforced":
        out["nodes"] = {
            node: {"ms": _ms(info["at"], since), "version": info["version"]}
            for node, info in detail.items()
        }
    return out


def bus_log(heard: Sequence[Heard], t0: float) -> list[dict[str, Any]]:
    """The decoded bus messages after t0 (metrics left out: they are many and periodic), each
    with its arrival time in seconds since t0."""
    out: list[dict[str, Any]] = []
    for item in heard:
        message = item.message
        if item.at < t0 or isinstance(message, bytes | LinkMetrics):
            continue
        entry: dict[str, Any] = {"t_s": round(item.at - t0, 4), "topic": item.topic}
        if isinstance(message, PolicySent):
            entry["policy"] = {
                "node": message.node,
                "version": message.version,
                "operation": message.operation,
                "bids": [list(pair) for pair in message.bids],
            }
        else:
            entry["message"] = message.model_dump(mode="json")
        out.append(entry)
    return out


def analyse(data: RunData) -> dict[str, Any]:
    """The whole measured run as one JSON-able document."""
    tcp = {
        name: data.tcp_after.get(name, 0) - data.tcp_before.get(name, 0)
        for name in tcpstats.KEPT
        if name in data.tcp_after
    }
    options = data.options
    return {
        "scenario": options.scenario.name,
        "decider": options.decider.value,
        "topic_root": data.topic_root,
        "backend": options.backend,
        "pipe_kind": data.pipe_kind,
        "failure": data.failure,
        "duration_s": round(data.ended - data.t0, 3) if data.t0 else None,
        "steps": step_rows(data) if data.t0 else [],
        "stream": stream_stats(data.stream, data.t0),
        "voice": voice.summary(data.voice["cn"], data.voice["mnn"]) if data.voice else None,
        "tcp": {
            "counters": tcp,
            "connection_retransmitted": tcpstats.retransmitted(data.tcp_connection),
            "connection": data.tcp_connection,
        },
        "series": series(data.samples, data.t0) if data.t0 else {},
        "bus": bus_log(data.heard, data.t0) if data.t0 else [],
    }
