"""The run's outputs in its directory: `result.json` (everything measured), `timeline.txt`
(the table printed at the end) and `figure7.png` (see `plot`).

The table has one row per step: its label, where it sits on the time axis, what it was, and
what was measured, as delays after the step's reference (its own action, or the last one
before it), so "t2 enforced at the HA +22 ms" reads as 22 ms after t1's policy was sent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _ms(value: object) -> str:
    return "-" if value is None else f"{float(value):.0f} ms"  # type: ignore[arg-type]


def measured(row: dict[str, Any]) -> str:
    """What one step measured, in words."""
    parts: list[str] = []
    action = row.get("action")
    if action is not None:
        versions = action.get("versions")
        parts.append(
            f"{action['name']} {_ms(action['took_ms'])}"
            + (f" (v{'/'.join(str(v) for v in versions.values())})" if versions else "")
        )
    delivery = row.get("delivery")
    if delivery is not None and row.get("conditions") == []:
        parts += [
            f"{node} enforced +{_ms(info['enforced_ms'])}"
            for node, info in delivery.items()
            if info["enforced_ms"] is not None
        ]
    link = row.get("link")
    if link is not None:
        if link["link_state_ms"] is not None:
            parts.append(f"link state +{_ms(link['link_state_ms'])}")
        if link["mr_fallback_ms"] is not None:
            parts.append(f"MR PREM fallback status +{_ms(link['mr_fallback_ms'])}")
        parts += [f"{e['event']} +{_ms(e['ms'])}" for e in link["binding_events"]]
        moved = [
            f"{name} +{_ms(link[key])}"
            for key, name in (("downlink_moved_ms", "downlink"), ("uplink_moved_ms", "uplink"))
            if link[key] is not None
        ]
        if moved:
            parts.append(f"flows -> {link['flows_to']}: {', '.join(moved)}")
    for cond in row.get("conditions", []):
        if link is not None and cond["until"] in ("link-state", "binding"):
            continue  # already said above
        parts.append(_condition(cond))
    return "; ".join(p for p in parts if p)


def _condition(cond: dict[str, Any]) -> str:
    kind = cond["until"]
    if kind == "enforced":
        return ", ".join(
            f"{node} enforced +{_ms(info['ms'])} (v{info['version']})"
            for node, info in cond["nodes"].items()
        )
    if kind == "flows":
        moves = [
            f"{name} +{_ms(cond.get(f'moved_ms_{key}'))}"
            for key, name in (("rx", "downlink"), ("tx", "uplink"))
            if cond.get(f"moved_ms_{key}") is not None
        ]
        return f"flows on {cond['interface']}" + (f" ({', '.join(moves)})" if moves else "")
    return f"{kind} +{_ms(cond['after_ms'])}"


def table(result: dict[str, Any]) -> str:
    """The timeline table and the run's summary as text."""
    lines = [
        f"scenario {result['scenario']} ({result['decider']} decider, "
        f"{result['backend']} back end, {result.get('pipe_kind') or '?'} pipes)",
        f"{'step':5} {'t (s)':>7}  {'event':62} measured (after the step's reference)",
    ]
    for row in result["steps"]:
        title = row["title"]
        if row.get("label"):
            title = title.removeprefix(f"{row['label']}: ")
        lines.append(
            f"{row.get('label') or '':5} {row['t_s']:7.2f}  {title[:62]:62} {measured(row)}"
        )
    stream = result["stream"]
    tcp = result["tcp"]
    counters = tcp["counters"]
    lines += [
        "",
        f"stream: {stream.get('bytes', 0) / 1e6:.2f} MB delivered"
        + (
            f" in {stream['duration_s']:.1f} s ({stream['goodput_bps'] / 1e6:.2f} Mb/s); "
            f"longest gap {stream['longest_gap_ms']:.0f} ms at {stream['longest_gap_at_s']:.2f} s"
            if stream.get("duration_s")
            else ""
        ),
        f"TCP at the CN: {counters.get('RetransSegs', 0)} segments retransmitted "
        f"(fast {counters.get('TCPFastRetrans', 0)}, timeouts {counters.get('TCPTimeouts', 0)}, "
        f"loss probes {counters.get('TCPLossProbes', 0)}) of {counters.get('OutSegs', 0)} sent",
    ]
    voice = result.get("voice")
    if voice:
        lines.append(
            f"voice: {voice['lost']} lost (down {voice['downlink']['lost']} of "
            f"{voice['downlink']['sent']}, up {voice['uplink']['lost']} of "
            f"{voice['uplink']['sent']}), {voice['duplicates']} duplicates, longest gap "
            f"{_gap(voice['longest_gap_s'])}"
        )
    if result.get("failure"):
        lines.append(f"FAILED: {result['failure']}")
    return "\n".join(lines)


def _gap(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def comparison(results: dict[str, dict[str, Any]]) -> str:
    """Runs of one scenario side by side (protection off and on): voice lost, longest voice
    gap, duplicates received, bulk throughput."""
    names = list(results)
    rows: list[tuple[str, list[str]]] = []

    def voice_of(result: dict[str, Any], key: str) -> Any:
        voice = result.get("voice") or {}
        return voice.get(key)

    rows.append(("voice packets lost", [str(voice_of(r, "lost")) for r in results.values()]))
    rows.append(
        (
            "  downlink / uplink",
            [
                f"{(r.get('voice') or {}).get('downlink', {}).get('lost')} / "
                f"{(r.get('voice') or {}).get('uplink', {}).get('lost')}"
                for r in results.values()
            ],
        )
    )
    rows.append(
        ("longest voice gap", [_gap(voice_of(r, "longest_gap_s")) for r in results.values()])
    )
    rows.append(("duplicates received", [str(voice_of(r, "duplicates")) for r in results.values()]))
    rows.append(
        (
            "bulk throughput",
            [
                f"{r['stream']['goodput_bps'] / 1e6:.2f} Mb/s"
                if r["stream"].get("goodput_bps")
                else "-"
                for r in results.values()
            ],
        )
    )
    rows.append(("run", ["failed" if r.get("failure") else "ok" for r in results.values()]))
    width = max(14, *(len(n) for n in names))
    lines = [f"{'':22}" + "".join(f"{n:>{width + 2}}" for n in names)]
    lines += [f"{label:22}" + "".join(f"{v:>{width + 2}}" for v in vals) for label, vals in rows]
    return "\n".join(lines)


def write(out: Path, result: dict[str, Any]) -> dict[str, Path]:
    """Write result.json and timeline.txt; return their paths."""
    paths = {"json": out / "result.json", "timeline": out / "timeline.txt"}
    paths["json"].write_text(json.dumps(result, indent=1), encoding="utf-8")
    paths["timeline"].write_text(table(result) + "\n", encoding="utf-8")
    return paths
