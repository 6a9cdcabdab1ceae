"""Multi-attribute scores of candidate links: weighted utility and TOPSIS. Pure arithmetic.

Both take the same columns (one per attribute: the candidates' values, a weight, and whether
more is better) and return one score in [0, 1] per candidate, so the stability margin means
the same thing under either method.

Unknown values (a link that does not report an attribute) take the worst known value of their
column: a link is not rewarded for silence. A column nobody reports is left out.

Weighted utility normalises by the best value, not min-max: with min-max two links always
score 0 and 1 on an attribute however close they are, so a 1 ms difference in delay would beat
any margin. With ratio normalisation (x / max for a benefit, min / x for a cost) 50 ms against
51 ms is 1.0 against 0.98, and the margin works as hysteresis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Column:
    """One attribute over all candidates."""

    values: tuple[float | None, ...]
    weight: float
    benefit: bool  # True: more is better (bandwidth, security); False: less (cost, delay)


def utility(columns: Sequence[Column], count: int) -> tuple[float, ...]:
    """Normalised weighted sum: sum of weight x ratio-normalised value, over the total weight."""
    used = _usable(columns)
    total = sum(c.weight for c, _ in used)
    if total <= 0:
        return (1.0,) * count
    scores = [0.0] * count
    for column, values in used:
        for i, value in enumerate(_ratio(values, column.benefit)):
            scores[i] += column.weight * value / total
    return tuple(scores)


def topsis(columns: Sequence[Column], count: int) -> tuple[float, ...]:
    """Relative closeness to the ideal candidate (TOPSIS, vector normalisation).

    Candidates equal on every attribute are all ideal (1.0).
    """
    used = _usable(columns)
    total = sum(c.weight for c, _ in used)
    if total <= 0:
        return (1.0,) * count
    to_best = [0.0] * count
    to_worst = [0.0] * count
    for column, values in used:
        norm = math.sqrt(sum(v * v for v in values))
        weighted = [column.weight / total * (v / norm if norm > 0 else 0.0) for v in values]
        best, worst = (max(weighted), min(weighted))
        if not column.benefit:
            best, worst = worst, best
        for i, v in enumerate(weighted):
            to_best[i] += (v - best) ** 2
            to_worst[i] += (v - worst) ** 2
    scores = []
    for plus, minus in zip(to_best, to_worst, strict=True):
        d_plus, d_minus = math.sqrt(plus), math.sqrt(minus)
        scores.append(1.0 if d_plus + d_minus == 0 else d_minus / (d_plus + d_minus))
    return tuple(scores)


def _usable(columns: Sequence[Column]) -> list[tuple[Column, list[float]]]:
    """Columns with a weight and at least one known value, unknowns filled with the worst."""
    used = []
    for column in columns:
        known = [v for v in column.values if v is not None]
        if column.weight <= 0 or not known:
            continue
        worst = min(known) if column.benefit else max(known)
        used.append((column, [worst if v is None else v for v in column.values]))
    return used


def _ratio(values: list[float], benefit: bool) -> list[float]:
    """x / max for a benefit; min / x for a cost (a zero cost is the best, 1.0)."""
    if benefit:
        top = max(values)
        return [1.0 if top <= 0 else v / top for v in values]
    low = min(values)
    return [1.0 if v <= low else low / v for v in values]
