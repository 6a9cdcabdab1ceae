"""The paper's Figure 8 redrawn: processing time vs number of policies, one line per method."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after matplotlib.use

STYLES = {
    "paper": ("paper's method: one ip6tables per policy", "o", "-"),
    "iptables": ("iptables back end (libiptc, one commit)", "s", "-"),
    "nftables": ("nftables back end (one batch)", "^", "-"),
    "restore": ("floor: ip6tables-legacy-restore -n", "x", "--"),
    "nft": ("floor: nft -f (map of N elements)", "+", "--"),
}


def figure8(medians: dict[tuple[str, int], float], path: Path) -> None:
    """Log-log plot of median milliseconds against N, saved as PNG at `path`."""
    fig, ax = plt.subplots(figsize=(7, 5))
    for method, (label, marker, line) in STYLES.items():
        points = sorted((n, ms) for (m, n), ms in medians.items() if m == method)
        if points:
            ax.plot(
                [n for n, _ in points],
                [ms for _, ms in points],
                marker=marker,
                ls=line,
                label=label,
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of policies in one message")
    ax.set_ylabel("processing time (ms, median)")
    ax.set_title("Policy enforcement time (cf. paper Fig. 8)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
