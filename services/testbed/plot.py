"""The paper's Figure 7 redrawn from a run: packets per second on the MR's eth0 and eth1.

Both directions are counted, as a capture on the interface would (the stream arriving and the
ACKs leaving); thin lines show each direction. A dashed line and its label mark every
labelled step. matplotlib is a development dependency: without it the run still writes its
table and JSON, and says why there is no PNG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLOURS = {"eth0": "tab:blue", "eth1": "tab:orange"}


def draw(result: dict[str, Any], path: Path) -> Path | None:
    """Draw the figure to `path` (PNG); None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    series = result.get("series") or {}
    times = series.get("t", [])
    fig, ax = plt.subplots(figsize=(11, 4.8), dpi=110)
    top = 1.0
    for name, colour in COLOURS.items():
        if name not in series:
            continue
        rx, tx = series[name]["rx"], series[name]["tx"]
        total = [r + t for r, t in zip(rx, tx, strict=True)]
        top = max([top, *total])
        ax.plot(times, total, color=colour, linewidth=1.6, label=f"{name} (rx + tx)")
        ax.plot(times, rx, color=colour, linewidth=0.6, linestyle=":", label=f"{name} rx")
        ax.plot(times, tx, color=colour, linewidth=0.6, linestyle="--", label=f"{name} tx")
    level, previous = 0, None
    for row in result.get("steps", []):
        label = row.get("label")
        if not label:
            continue
        # Labels closer than a second apart (t1, t2, t3 are tens of ms apart) stack upwards.
        close = previous is not None and row["t_s"] - previous < 1.0
        level = level + 1 if close else 0
        previous = row["t_s"]
        stagger = level
        ax.axvline(row["t_s"], color="grey", linewidth=0.8, linestyle="--")
        ax.annotate(
            label,
            (row["t_s"], top * (1.02 + 0.06 * stagger)),
            ha="center",
            fontsize=9,
            annotation_clip=False,
        )
    ax.set_xlabel("time since the stream started (s)")
    ax.set_ylabel("packets per second (100 ms bins)")
    ax.set_ylim(0, top * 1.22)
    what = "HTTP stream CN -> MNN"
    if result.get("voice"):
        what = "HTTP stream and voice (both ways)"
    ax.set_title(
        f"{result.get('scenario')}: {what} on the MR's egress interfaces "
        f"({result.get('decider')} decider, {result.get('pipe_kind') or '?'} pipes)",
        fontsize=10,
    )
    ax.legend(loc="upper right", fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
