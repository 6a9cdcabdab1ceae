"""Medians, ratios, the printed tables and the PASS/FAIL targets. Pure code.

Two kinds of ratio: the ratio of two medians, and the *paired* ratio, the median over
repetitions of the ratio of the two values measured in the same repetition, seconds apart.
On a shared machine whose load drifts between repetitions the paired ratio is the steadier
one, so the tables and the targets use it; the JSON holds both.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from bench.forwarding import ForwardSample
from bench.loadtime import LoadSample

#: (method, size, repetition) -> value (ms or packets/s) of the samples that succeeded.
Values = dict[tuple[str, int, int], float]
#: (method, size) -> median value.
Medians = dict[tuple[str, int], float]

LOAD_COLUMNS = ("paper", "iptables", "nftables", "restore", "nft")
LOAD_HEADERS = ("paper", "iptables", "nftables", "restore floor", "nft floor")
RATIOS = (("paper", "nftables"), ("paper", "iptables"), ("nftables", "nft"))
TARGET_N = 1000
FORWARD_SIZES = (10, 10_000)


@dataclass(frozen=True)
class Target:
    """One goal: `ok` is None when it could not be measured (counts as not met)."""

    name: str
    ok: bool | None
    detail: str

    @property
    def verdict(self) -> str:
        """PASS, FAIL or N/A."""
        return "N/A" if self.ok is None else "PASS" if self.ok else "FAIL"


def load_values(samples: list[LoadSample]) -> Values:
    """Milliseconds per (method, N, repetition)."""
    return {(s.method, s.n, s.rep): s.ms for s in samples if s.ms is not None}


def forward_values(samples: list[ForwardSample]) -> Values:
    """Forwarded packets/s per (method, policies, repetition)."""
    return {(s.method, s.policies, s.rep): s.pps for s in samples if s.pps is not None}


def medians(values: Values) -> Medians:
    """Median per (method, size) over the repetitions."""
    groups: dict[tuple[str, int], list[float]] = {}
    for (method, size, _), value in values.items():
        groups.setdefault((method, size), []).append(value)
    return {key: statistics.median(v) for key, v in groups.items()}


def paired(values: Values, a: tuple[str, int], b: tuple[str, int]) -> float | None:
    """Median over repetitions of value(a) / value(b) measured in the same repetition."""
    ratios = [
        value / values[(*b, rep)]
        for (method, size, rep), value in values.items()
        if (method, size) == a and values.get((*b, rep))
    ]
    return statistics.median(ratios) if ratios else None


def ratio_of_medians(meds: Medians, a: tuple[str, int], b: tuple[str, int]) -> float | None:
    """meds[a] / meds[b], None when either is missing."""
    x, y = meds.get(a), meds.get(b)
    return None if x is None or not y else x / y


def _cell(value: float | None, fmt: str, width: int, unit: str = "") -> str:
    return f"{'-':>{width + len(unit)}}" if value is None else f"{value:{width}{fmt}}{unit}"


def load_table(values: Values, sizes: list[int]) -> str:
    """N, the median ms per method, and the paired ratios, one line per N."""
    meds = medians(values)
    head = f"{'N':>6}" + "".join(f"{h + ' (ms)':>20}" for h in LOAD_HEADERS)
    head += "".join(f"{f'{a}/{b}':>18}" for a, b in RATIOS)
    lines = [head, "-" * len(head)]
    for n in sizes:
        row = f"{n:>6}" + "".join(_cell(meds.get((m, n)), ".2f", 20) for m in LOAD_COLUMNS)
        row += "".join(_cell(paired(values, (a, n), (b, n)), ".2f", 17, "x") for a, b in RATIOS)
        lines.append(row)
    return "\n".join(lines)


def forward_table(values: Values, backends: list[str]) -> str:
    """Median packets/s with 10 and 10,000 policies per back end, and their paired ratio."""
    meds = medians(values)
    small, large = FORWARD_SIZES
    head = f"{'method':<10}{f'{small} (pkt/s)':>18}{f'{large} (pkt/s)':>18}"
    head += f"{f'{large}/{small}':>14}"
    lines = [head, "-" * len(head)]
    for b in backends:
        x, y = meds.get((b, small)), meds.get((b, large))
        r = paired(values, (b, large), (b, small))
        lines.append(f"{b:<10}{_cell(x, ',.0f', 18)}{_cell(y, ',.0f', 18)}{_cell(r, '.2f', 14)}")
    none = meds.get(("none", 0))
    lines.append(f"{'none':<10}{_cell(none, ',.0f', 18)}   (reference: no rules, main-table route)")
    return "\n".join(lines)


def all_ratios(load: Values, fwd: Values, sizes: list[int]) -> list[dict[str, object]]:
    """Every ratio of the tables, paired and of medians, for the JSON."""
    load_meds, fwd_meds = medians(load), medians(fwd)
    rows: list[dict[str, object]] = []
    for n in sizes:
        for a, b in RATIOS:
            key_a, key_b = (a, n), (b, n)
            rows.append(
                {
                    "ratio": f"{a}/{b}",
                    "n": n,
                    "paired": paired(load, key_a, key_b),
                    "of_medians": ratio_of_medians(load_meds, key_a, key_b),
                }
            )
    small, large = FORWARD_SIZES
    for backend in ("iptables", "nftables"):
        key_a, key_b = (backend, large), (backend, small)
        rows.append(
            {
                "ratio": f"{backend} pps {large}/{small}",
                "paired": paired(fwd, key_a, key_b),
                "of_medians": ratio_of_medians(fwd_meds, key_a, key_b),
            }
        )
    return rows


def _bounded(name: str, value: float | None, bound: float, *, at_least: bool) -> Target:
    if value is None:
        return Target(name, None, "not measured")
    ok = value >= bound if at_least else value <= bound
    need = ">=" if at_least else "<="
    return Target(name, ok, f"{value:.2f}x (need {need} {bound:g}x; median of paired ratios)")


def targets(load: Values, fwd: Values) -> list[Target]:
    """The goals of the task, from the paired ratios."""
    n = TARGET_N
    small, large = FORWARD_SIZES
    return [
        _bounded(
            f"N={n}: nftables >= 50x faster than paper",
            paired(load, ("paper", n), ("nftables", n)),
            50,
            at_least=True,
        ),
        _bounded(
            f"N={n}: nftables within 2x of nft -f floor",
            paired(load, ("nftables", n), ("nft", n)),
            2,
            at_least=False,
        ),
        _bounded(
            f"N={n}: iptables >= 3x faster than paper",
            paired(load, ("paper", n), ("iptables", n)),
            3,
            at_least=True,
        ),
        _bounded(
            f"forwarding: nftables with {large} policies within 30% of with {small}",
            paired(fwd, ("nftables", large), ("nftables", small)),
            0.7,
            at_least=True,
        ),
    ]
