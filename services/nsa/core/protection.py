"""Copies of every packet: redundant steering, and protection of a class whose link is at risk.

Redundant steering keeps the class's own link by the single-link rules (best score, margin
and dwell), and sends a copy of every packet on the next best eligible links (`paths` in all,
2 by default): each flow's policy is a duplicate action, the original on the class's link.
A copy link stays while it is eligible (a copy link that changed with every score would
rewrite the policies at each report); a free place is filled by the best ranked other link.

Protection (`protect = "when-at-risk"`, single-link modes): when the class's link reaches
`risk_fraction` of one of the class's bounds (RTT against `max_delay_ms`, jitter against
`max_jitter_ms`, loss against `max_loss`), the class's policies become duplicates over that
link and the best other eligible link, in the decision of that very report (no dwell). They
go back to plain forwarding only once the class's link has stayed below every such fraction
for `protect_hold_s` (a decision is woken then); a report at risk during the hold starts it
again. So a metric oscillating around the fraction turns protection on once and keeps it:
each switch off needs `protect_hold_s` of health, so a class switches protection on at most
duration / hold + 1 times over a duration. A link that breaks a bound outright is no longer
eligible and the class moves at once (the ordinary rule); its new link is judged the same way.
"""

from __future__ import annotations

from dataclasses import replace

from services.nsa.core.config import ApplicationProfile, Protect
from services.nsa.core.explain import Reason
from services.nsa.core.inputs import Link
from services.nsa.core.stability import Context, Outcome
from services.nsa.core.state import ClassState
from services.nsa.core.steering import Candidate


def copy_links(
    keep: tuple[int, ...], ranked: tuple[Candidate, ...], primary: int, count: int
) -> tuple[int, ...]:
    """Up to `count` eligible links other than `primary`: those of `keep` still eligible
    first (in their order), then the best ranked others."""
    eligible = [c.bid for c in ranked if c.bid != primary]
    kept = [b for b in keep if b in eligible]
    fill = [b for b in eligible if b not in kept]
    return tuple([*kept, *fill][:count])


def with_copies(
    profile: ApplicationProfile,
    outcome: Outcome,
    ranked: tuple[Candidate, ...],
    previous: ClassState,
) -> Outcome:
    """Redundant steering: the single-link outcome plus copies on `paths - 1` other links."""
    if not outcome.flows:
        return outcome
    copies = copy_links(previous.copies, ranked, outcome.flows[0], profile.path_count() - 1)
    return replace(outcome, copies=copies)


def at_risk(profile: ApplicationProfile, link: Link | None) -> str | None:
    """Why the link is at risk for the class ("if1 delay 180 ms >= 0.8 x 200 ms"), or None."""
    if link is None:
        return None
    need, fraction = profile.requirements, profile.risk_fraction
    name = link.interface or f"BID {link.bid}"
    for label, value, bound, unit in (
        ("delay", link.rtt_ms, need.max_delay_ms, " ms"),
        ("jitter", link.jitter_ms, need.max_jitter_ms, " ms"),
        ("loss", link.loss, need.max_loss, ""),
    ):
        if bound is not None and value is not None and value >= fraction * bound:
            return f"{name} {label} {value:g}{unit} >= {fraction:g} x {bound:g}{unit}"
    return None


def protect(
    profile: ApplicationProfile,
    outcome: Outcome,
    ranked: tuple[Candidate, ...],
    previous: ClassState,
    ctx: Context,
) -> Outcome:
    """Protection on the single-link `outcome`: copies while the class's link is at risk and
    until it has been healthy for the hold time (see the module docstring)."""
    if profile.protect is not Protect.WHEN_AT_RISK or not outcome.flows:
        return outcome
    now, primary = ctx.now, outcome.flows[0]
    risk = at_risk(profile, ctx.view.links.get(primary))
    was_on = bool(previous.copies)
    moved = outcome.flows != previous.flows
    if risk is None and not was_on:
        return outcome
    healthy_since = None
    if risk is None:
        healthy_since = now if previous.healthy_since is None else previous.healthy_since
        healthy_for = now - healthy_since
        if healthy_for >= profile.protect_hold_s:
            return replace(
                outcome,
                reason=outcome.reason if moved else Reason.PROTECTION_OFF,
                detail=_join(
                    f"protection off: healthy for {healthy_for:g} s "
                    f"(hold {profile.protect_hold_s:g} s)",
                    outcome.detail,
                ),
            )
        why = f"protection held: healthy for {healthy_for:g} of {profile.protect_hold_s:g} s"
    else:
        why = f"protected: {risk}"
    copies = copy_links(previous.copies, ranked, primary, 1)
    if not copies:
        return replace(
            outcome, detail=_join(f"{why}, but no other eligible link to copy to", outcome.detail)
        )
    switched_on = not was_on
    reason = Reason.PROTECTED if outcome.reason is Reason.KEPT else outcome.reason
    return replace(
        outcome,
        reason=reason,
        detail=_join(f"{why}; copies on BID {copies[0]}", outcome.detail),
        copies=copies,
        protected_since=now if switched_on else previous.protected_since,
        healthy_since=healthy_since,
    )


def _join(first: str, rest: str) -> str:
    return f"{first}; {rest}" if rest else first
